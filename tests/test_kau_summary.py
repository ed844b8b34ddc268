"""How a distilled run's KAU weighs its teachers over a split (`emtm show` without --sample-id, and the
table `emtm distill` prints and writes to kau.json), checked on two imported teachers: one at the ground
truth, one far from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emtm.cli import main
from emtm.config import TrainConfig, load_data_config
from emtm.data.dataset import prepare
from emtm.distill.cache import import_outputs
from emtm.engine.checkpoint import load_run
from emtm.engine.train import train
from emtm.experiments.show import TeacherView
from helpers import write_jsonl


@pytest.fixture(scope="module")
def run_and_caches(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """An EMTM run distilled for 1 epoch from a teacher at the ground truth and one at the far end."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("kau")
    samples = prepare(load_data_config(tiny_data), 0, ("train",)).splits["train"].samples
    right, wrong = [], []
    for s in samples:
        right.append({"sample_id": s.sample_id, "unit": "seconds", "window": [s.start, s.end]})
        far = [0.9, 1.0] if (s.start + s.end) / 2 < s.duration / 2 else [0.0, 0.1]
        wrong.append({"sample_id": s.sample_id, "unit": "fraction", "window": far})
    caches = [
        str(import_outputs("regression", write_jsonl(out / f"{name}.jsonl", records), tiny_data, "train",
                           out / f"{name}.h5", teacher_name=name))
        for name, records in (("right", right), ("wrong", wrong))
    ]  # fmt: skip
    return distill(tiny_data, caches, out / "emtm"), caches


def distill(data: Path, caches: list[str], out: Path, **options: object) -> Path:
    """A 1-epoch EMTM run at d = 32 from `caches`, with extra model options."""
    cfg = TrainConfig(
        data=str(data),
        model="emtm",
        model_options={"d": 32, "n_heads": 4, "n_teachers": len(caches), **options},
        optim={"epochs": 1, "batch_size": 16},
        run={"progress": False, "device": "cpu"},
        teachers=caches,
    )
    train(cfg, out)
    return out


def test_summary_against_the_oracle(run_and_caches: tuple[Path, list[str]]) -> None:
    run, _ = run_and_caches
    view = TeacherView(load_run(run), split="train")
    summary = view.summary(batch_size=7)  # batches with padding
    right, wrong = summary["teachers"]
    assert (right["teacher"], wrong["teacher"]) == ("right", "wrong")
    assert summary["n_queries"] == len(view)
    for key in ("weight_start", "weight_end"):
        assert right[key] + wrong[key] == pytest.approx(1.0, abs=1e-5)
    assert right["kau_top_share"] + wrong["kau_top_share"] == pytest.approx(1.0)
    # the teacher at the ground truth is the oracle's pick on every boundary, and much the better one
    assert (right["oracle_share"], wrong["oracle_share"]) == (1.0, 0.0)
    assert right["hard_loss"] < wrong["hard_loss"] - 1.0
    assert summary["kau_agrees_with_oracle"] == pytest.approx(right["kau_top_share"])
    loss = summary["ensemble_hard_loss"]
    assert loss["oracle pick"] == pytest.approx(right["hard_loss"], rel=1e-5)
    # a mixture's cross-entropy is at most the mixture of the cross-entropies (-log is convex)
    assert loss["oracle pick"] < loss["plain mean"] <= (right["hard_loss"] + wrong["hard_loss"]) / 2
    assert loss["oracle pick"] <= loss["KAU weights"]
    # the per-query weights are the KAU's own: one query alone gives what the padded batch gave
    _, batched, _ = view.weigh(next(iter(view.batches(7))))
    assert view.explain(0).weights == pytest.approx(batched[0].numpy(), abs=1e-5)


def test_show_without_a_sample_prints_and_writes_the_table(
    run_and_caches: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, _ = run_and_caches
    out = tmp_path / "kau.json"
    assert main(["show", "--run", str(run), "--split", "val", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "KAU weights over" in printed and "val queries" in printed and "oracle pick" in printed
    written = json.loads(out.read_text())
    assert written["split"] == "val" and [t["teacher"] for t in written["teachers"]] == ["right", "wrong"]
    assert 0 < written["n_queries"] < len(TeacherView(load_run(run), split="train"))


def test_the_live_isomorphic_teacher_is_in_the_table_and_the_figure(
    run_and_caches: tuple[Path, list[str]], tiny_data: Path, tmp_path: Path
) -> None:
    """With iso_in_kau the KAU also weighs the isomorphic teacher's live outputs: the table and the figure
    show it as one more teacher, its distributions computed from the run, not dropped."""
    _, caches = run_and_caches
    run = distill(tiny_data, caches[:1], tmp_path / "iso", iso_in_kau=True)
    view = TeacherView(load_run(run), split="train")
    summary = view.summary(batch_size=7)
    assert [t["teacher"] for t in summary["teachers"]] == ["right", "isomorphic (live)"]
    for key in ("weight_start", "weight_end"):
        assert sum(t[key] for t in summary["teachers"]) == pytest.approx(1.0, abs=1e-5)
    live = summary["teachers"][1]
    assert live["hard_loss"] > summary["teachers"][0]["hard_loss"]  # 1 epoch: worse than the ground truth
    q = view.explain(0)
    assert q.teacher_dists.shape[0] == 2 and q.weights.sum(0) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert q.teacher_dists[1].sum(-1) == pytest.approx([1.0, 1.0], abs=1e-4)
    assert not np.allclose(q.teacher_dists[0], q.teacher_dists[1])
    figure = tmp_path / "q.png"
    assert main(["show", "--run", str(run), "--sample-id", q.sample.sample_id, "--out", str(figure)]) == 0
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_summary_compares_the_kau_with_every_mixture_paired_over_queries(
    run_and_caches: tuple[Path, list[str]],
) -> None:
    run, _ = run_and_caches
    summary = TeacherView(load_run(run), split="train").summary(batch_size=7)
    loss, versus = summary["ensemble_hard_loss"], summary["kau_minus"]
    right = summary["teachers"][0]
    assert loss["best single teacher"] == pytest.approx(right["hard_loss"], rel=1e-5)
    # fixed global weights, fitted on the other half of the queries, find the right teacher too
    assert loss["fixed best weights (2-fold)"] < loss["plain mean"]
    assert set(versus) == {"plain mean", "best single teacher", "fixed best weights (2-fold)"}
    d = versus["plain mean"]
    assert d["n"] == summary["n_queries"]
    assert d["mean"] == pytest.approx(loss["KAU weights"] - loss["plain mean"], abs=1e-5)


def test_a_fixed_weight_run_reports_its_own_weights(
    run_and_caches: tuple[Path, list[str]], tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A run without a KAU weighs its teachers by its fixed weights: the table reports those, not the
    mean, and says so; `fixed_weights: validation` is fitted on the held-out queries when training
    starts, and the teacher at the ground truth gets nearly all the weight."""
    _, caches = run_and_caches
    run = distill(
        tiny_data, caches, tmp_path / "fixed", use_kau=False, fixed_weights=[[0.9, 0.7], [0.1, 0.3]]
    )
    summary = TeacherView(load_run(run), split="train").summary(batch_size=7)
    assert summary["aggregator"] == "fixed"
    right, wrong = summary["teachers"]
    assert (right["weight_start"], right["weight_end"]) == pytest.approx((0.9, 0.7), abs=1e-5)
    assert (wrong["weight_start"], wrong["weight_end"]) == pytest.approx((0.1, 0.3), abs=1e-5)
    assert "fixed weights" in summary["ensemble_hard_loss"]
    assert summary["ensemble_hard_loss"]["fixed weights"] < summary["ensemble_hard_loss"]["plain mean"]

    fitted_run = distill(tiny_data, caches, tmp_path / "fitted", use_kau=False, fixed_weights="validation")
    fitted = json.loads((fitted_run / "config.json").read_text())["train"]["model_options"]["fixed_weights"]
    assert fitted[0][0] > 0.9 and fitted[0][1] > 0.9  # the right teacher, start and end
    assert main(["show", "--run", str(fitted_run), "--split", "val"]) == 0
    assert "fixed weights over" in capsys.readouterr().out


def test_a_plain_mean_run_reports_the_mean(
    run_and_caches: tuple[Path, list[str]], tiny_data: Path, tmp_path: Path
) -> None:
    _, caches = run_and_caches
    run = distill(tiny_data, caches, tmp_path / "mean", use_kau=False)
    summary = TeacherView(load_run(run), split="train").summary(batch_size=7)
    assert summary["aggregator"] == "plain mean"
    assert [t["weight_start"] for t in summary["teachers"]] == pytest.approx([0.5, 0.5], abs=1e-6)


def test_distill_aggregator_flag(
    run_and_caches: tuple[Path, list[str]], tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`emtm distill --aggregator fixed|mean` trains the shared-encoder student with the fixed held-out
    mixture or the plain mean in the KAU's place, and its summary names what weighed the teachers."""
    from emtm.distill.model import AGGREGATORS

    _, caches = run_and_caches
    common = ["--data", str(tiny_data), "--epochs", "1", "--device", "cpu", "--no-progress"]
    common += ["--set", "model_options.d=32", "--set", "model_options.n_heads=4"]
    base = ["distill", *common, "--teachers", *caches]
    assert main([*base, "--out", str(tmp_path / "fixed"), "--aggregator", "fixed"]) == 0
    assert "fixed weights over" in capsys.readouterr().out
    options = json.loads((tmp_path / "fixed" / "config.json").read_text())["train"]["model_options"]
    assert options["use_kau"] is False and options["isomorphic"] is True
    assert options["fixed_weights"][0][0] > 0.9  # the teacher at the ground truth
    assert json.loads((tmp_path / "fixed" / "kau.json").read_text())["aggregator"] == "fixed"
    assert main([*base, "--out", str(tmp_path / "mean"), "--aggregator", "mean"]) == 0
    assert "plain mean weights over" in capsys.readouterr().out
    assert main(["distill", *common, "--out", str(tmp_path / "none"), "--aggregator", "fixed"]) == 2
    assert "give --teachers" in capsys.readouterr().err
    kau_only = ["--kau-teachers", *caches, "--aggregator", "mean"]
    assert main([*base, "--out", str(tmp_path / "x"), *kau_only]) == 2
    assert "--kau-teachers" in capsys.readouterr().err
    assert set(AGGREGATORS) == {"kau", "fixed", "mean"}  # the flag's choices
