"""EMTM end to end on the tiny preset: train a teacher, cache it, distil, evaluate the exported student."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emtm.cli import main

FAST = ["--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--device", "cpu", "--no-progress"]
SMALL = ["--set", "model_options.d=32", "--set", "model_options.n_heads=4"]


def test_teacher_export_distill_evaluate(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = str(tiny_data)
    teacher = tmp_path / "t_regress"
    assert (
        main(["train", "--data", data, "--model", "regress", "--out", str(teacher), *FAST, *SMALL[:2]]) == 0
    )
    cache = tmp_path / "regress.h5"
    export = ["teachers", "export", "--run", str(teacher), "--data", data, "--out", str(cache)]
    if not torch.cuda.is_available():  # the teacher runs where --device says; no GPU is a clear error
        assert main([*export, "--device", "cuda"]) == 2
        assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert main([*export, "--device", "cpu", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "regression" in out and "teacher outputs" not in err

    run = tmp_path / "emtm"
    args = ["distill", "--data", data, "--teachers", str(cache), "--out", str(run), *FAST, *SMALL]
    assert main(args) == 0
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert {"train_kd", "train_ensemble", "train_iso"} <= set(history[0])
    kau = json.loads((run / "kau.json").read_text())  # how the KAU weighs its one teacher, on val
    assert kau["split"] == "val" and kau["teachers"][0]["weight_start"] == pytest.approx(1.0)
    assert "KAU weights over" in capsys.readouterr().out

    student = run / "student"
    weights = load_file(student / "model.safetensors")
    assert not any(k.startswith(("dual", "iso_head", "kau")) for k in weights)
    assert json.loads((student / "config.json").read_text())["train"]["model"] == "student"
    sample_id = (Path(data).parent / "train.txt").read_text().split()[0] + "_0"
    figure = tmp_path / "q.png"
    assert main(["show", "--run", str(run), "--sample-id", sample_id, "--out", str(figure)]) == 0
    assert figure.read_bytes()[:4] == b"\x89PNG"
    report = tmp_path / "test.json"
    assert main(["evaluate", "--run", str(student), "--json", str(report), "--no-progress"]) == 0
    assert json.loads(report.read_text())["n_queries"] > 0


def test_distill_refuses_a_cache_for_other_annotations(tiny_data: Path, tmp_path: Path, capsys) -> None:
    teacher = tmp_path / "t"
    data = str(tiny_data)
    main(["train", "--data", data, "--model", "regress", "--out", str(teacher), *FAST[2:], "--epochs", "1"])
    other = tmp_path / "other"
    assert main(["synth", "--preset", "tiny", "--seed", "5", "--out", str(other)]) == 0
    cache = tmp_path / "c.h5"
    main(
        ["teachers", "export", "--run", str(teacher), "--data", str(other / "data.yaml"), "--out", str(cache)]
    )
    capsys.readouterr()
    assert (
        main(["distill", "--data", data, "--teachers", str(cache), "--out", str(tmp_path / "e"), *FAST]) == 2
    )
    assert "c.h5" in capsys.readouterr().err


def test_ablation_table_is_produced_and_resumable(tiny_data: Path, tmp_path: Path) -> None:
    data = str(tiny_data)
    caches = []
    for name in ("regress", "seqpan"):
        run = tmp_path / name
        main(
            [
                "train",
                "--data",
                data,
                "--model",
                name,
                "--out",
                str(run),
                *FAST[2:],
                "--epochs",
                "1",
                *SMALL[:2],
            ]
        )
        caches.append(str(tmp_path / f"{name}.h5"))
        assert main(["teachers", "export", "--run", str(run), "--data", data, "--out", caches[-1]]) == 0
    out = tmp_path / "ablation"
    args = [
        "ablate",
        "--data",
        data,
        "--teachers",
        *caches,
        "--out",
        str(out),
        "--seeds",
        "2",
        "--epochs",
        "1",
    ]
    assert main([*args, "--device", "cpu"]) == 0
    summary = json.loads((out / "ablation_summary.json").read_text())
    assert list(summary) == [
        "student alone",
        "student + regress",
        "student + seqpan",
        "student + mean of teachers",
        "student + KAU",
        "student + KAU + shared encoder (EMTM)",
        "student + fixed held-out weights + shared encoder (EMTM, fixed)",
        "EMTM, 1 teacher(s): regress",
        "EMTM, d=32",
        "EMTM, d=64",
        "student + smoothed ground truth (no teacher)",
        "student + best global weights (fitted on validation)",
    ]
    assert all(row["n_seeds"] == 2 and row["gflops"] > 0 and row["params"] > 0 for row in summary.values())
    keys = [row["key"] for row in summary.values()]
    assert keys[:3] == ["student", "single:regress", "single:seqpan"] and keys[-2:] == [
        "gt-smooth",
        "fixed-best",
    ]
    assert summary["student + KAU"]["vs_student"]["r1@0.7"]["seeds"] == [0, 1]
    assert summary["student + KAU"]["vs_best_single"]["row"] in ("student + regress", "student + seqpan")
    assert keys[6] == "emtm:fixed"
    fitted: dict[int, list] = {}
    for row in ("student---best-global-weights--fitted-on-validation",
                "student---fixed-held-out-weights---shared-encoder--emtm--fixed"):  # fmt: skip
        for seed in (0, 1):  # weights fitted on that seed's validation queries, per boundary
            config = json.loads((out / row / f"seed{seed}" / "config.json").read_text())["train"]
            weights = config["model_options"]["fixed_weights"]
            assert len(weights) == 2 and all(abs(sum(col) - 1) < 1e-3 for col in zip(*weights))
            fitted.setdefault(seed, []).append(weights)
    assert all(a == b for a, b in fitted.values()), "both rows fit on the same validation queries"
    fixed_emtm = json.loads((out / row / "seed0" / "config.json").read_text())["train"]["model_options"]
    assert fixed_emtm["isomorphic"] and not fixed_emtm["use_kau"]
    gt_run = out / "student---smoothed-ground-truth--no-teacher" / "seed0"
    gt = json.loads((gt_run / "config.json").read_text())
    assert gt["train"]["teachers"] == [] and gt["train"]["model_options"]["gt_smooth"] == 0.05
    assert summary["EMTM, d=32"]["params"] < summary["student alone"]["params"]
    table = (out / "ablation.md").read_text()
    assert "±" in table and "student + KAU + shared encoder (EMTM)" in table
    # one epoch each: the epoch chosen on validation is the last, for every row and seed
    assert all(row["best_epoch"] == {"per_seed": [1, 1], "of": 1} for row in summary.values())
    assert "| 1 of 1 |" in table
    assert (out / "ablation_curves.png").read_bytes()[:4] == b"\x89PNG"
    from emtm.experiments.ablate import read_state
    from emtm.experiments.ablation_report import validation_curves

    curves = validation_curves(out, read_state(out))
    assert set(curves) == set(summary) and all(c.shape == (2, 1) for c in curves.values())
    seed1 = json.loads((out / "student-alone" / "seed1" / "metrics.json").read_text())["history"]
    assert curves["student alone"][1, 0] == seed1[0]["val_r1@0.7"]
    before = (out / "ablation.json").stat().st_mtime_ns
    assert main([*args, "--device", "cpu"]) == 0  # everything finished: nothing is retrained
    assert (out / "ablation.json").stat().st_mtime_ns == before

    # each (row, seed) keeps its test queries' top-1 IoUs: they give the R1@0.7 the ablation recorded,
    # and each difference gets a bootstrap interval over seeds and test queries
    from emtm.experiments.ablation_report import QUERY_IOUS, seed_dir

    kept = seed_dir(out, "student + KAU + shared encoder (EMTM)", 1) / QUERY_IOUS
    ious = json.loads(kept.read_text())
    recorded = json.loads((out / "ablation.json").read_text())["rows"]
    emtm_seed1 = recorded["student + KAU + shared encoder (EMTM)"]["seeds"]["1"]
    assert len(ious["iou"]) == len(ious["sample_ids"]) == emtm_seed1["n_queries"]
    assert sum(v >= 0.7 for v in ious["iou"]) * 100 / len(ious["iou"]) == pytest.approx(emtm_seed1["r1@0.7"])
    boot = summary["student + KAU + shared encoder (EMTM)"]["vs_student"]["bootstrap"]
    assert boot["lo"] <= boot["mean"] <= boot["hi"] and (boot["n_seeds"], boot["n_queries"]) == (
        2,
        len(ious["iou"]),
    )
    assert boot["mean"] == pytest.approx(
        summary["student + KAU + shared encoder (EMTM)"]["vs_student"]["r1@0.7"]["mean"]
    )
    # a folder from before the IoUs were kept gets them from the saved runs, and nothing is retrained
    kept.unlink()
    assert main([*args, "--device", "cpu"]) == 0
    assert json.loads(kept.read_text()) == ious
    assert (out / "ablation.json").stat().st_mtime_ns == before


def test_summary_rows_show_a_spread_only_over_several_seeds() -> None:
    from emtm.experiments.ablation_report import summary_rows

    def seed(r7: float) -> dict:
        return {"r1@0.3": 50.0, "r1@0.5": 40.0, "r1@0.7": r7, "miou": 35.0}

    state = {
        "rows": {
            "one seed": {"seeds": {"0": seed(30.0)}, "params": 1e6, "gflops": 0.1},
            "two seeds": {"seeds": {"0": seed(30.0), "1": seed(34.0)}, "params": 1e6, "gflops": 0.1},
            "not run": {"seeds": {}},
        }
    }
    one, two = summary_rows(state)
    assert one[0] == "one seed" and one[3] == "30.00" and one[-3] == 1  # no "± 0.00" for one seed
    assert two[3] == "32.00 ± 25.41" and two[-3] == 2  # 95% CI: t(1) 12.706 x std 2.83 / sqrt(2)


def test_ablation_rows_are_numbered_as_in_the_paper() -> None:
    from emtm.errors import EmtmError
    from emtm.experiments.ablate import ablation_rows, parse_rows

    groups = {row.name: row.group for row in ablation_rows(["a.h5", "b.h5"])}
    assert groups["student alone"] == 1 and groups["student + a"] == groups["student + b"] == 2
    assert groups["student + mean of teachers"] == 3 and groups["student + KAU"] == 4
    assert groups["student + KAU + shared encoder (EMTM)"] == 5
    assert groups["EMTM, 1 teacher(s): a"] == 6 and groups["EMTM, d=32"] == 7
    assert groups["student + smoothed ground truth (no teacher)"] == 8
    assert groups["student + best global weights (fitted on validation)"] == 9
    assert "student + mean of calibrated teachers" not in groups
    calibrated = {row.key: row for row in ablation_rows(["a.h5", "b.h5"], calibrated=["ca.h5", "cb.h5"])}
    assert calibrated["calibrated-mean"].group == 10 and calibrated["calibrated-mean"].teachers == [
        "ca.h5",
        "cb.h5",
    ]
    assert (
        parse_rows("1,3,5") == {1, 3, 5} and parse_rows("8,9,10") == {8, 9, 10} and parse_rows(None) is None
    )
    assert parse_rows("1,emtm:fixed, fixed-best") == {1, "emtm:fixed", "fixed-best"}
    for bad in ("0,11", "1,,3", "12"):
        with pytest.raises(EmtmError, match="--rows"):
            parse_rows(bad)


def test_ablation_takes_emtm_options_and_refuses_to_mix_them(tiny_data: Path, tmp_path: Path, capsys) -> None:
    data, run, cache = str(tiny_data), tmp_path / "regress", str(tmp_path / "regress.h5")
    train = ["train", "--data", data, "--model", "regress", "--out", str(run), *FAST[2:], "--epochs", "1"]
    assert main([*train, *SMALL[:2]]) == 0
    assert main(["teachers", "export", "--run", str(run), "--data", data, "--out", cache]) == 0
    out = tmp_path / "ablation"
    args = ["ablate", "--data", data, "--teachers", cache, "--out", str(out), "--seeds", "1", "--epochs", "1"]
    args += ["--rows", "5", "--device", "cpu"]
    assert main([*args, "--emtm-option", "kd_weight=3.2", "--emtm-option", "temperature=2"]) == 0
    state = json.loads((out / "ablation.json").read_text())
    assert state["emtm_options"] == {"kd_weight": 3.2, "temperature": 2}
    (config,) = out.glob("*/seed0/config.json")
    options = json.loads(config.read_text())["train"]["model_options"]
    assert options["kd_weight"] == 3.2 and options["temperature"] == 2 and options["n_teachers"] == 1
    capsys.readouterr()
    assert main([*args, "--emtm-option", "kd_weight=0.1"]) == 2  # the same folder, other options
    assert "holds rows distilled with EMTM options" in capsys.readouterr().err
    assert main([*args, "--emtm-option", "kd_wieght=1"]) == 2
    assert "kd_wieght" in capsys.readouterr().err
    # rows chosen by key: only that row runs; a key no row has with these teachers is named
    same = [*args[:-4], "--device", "cpu", "--emtm-option", "kd_weight=3.2", "--emtm-option", "temperature=2"]
    assert main([*same, "--rows", "single:regress"]) == 0
    assert sorted(json.loads((out / "ablation.json").read_text())["rows"]) == [
        "student + KAU + shared encoder (EMTM)",
        "student + regress",
    ]
    assert main([*same, "--rows", "emtm:fixed"]) == 2
    err = capsys.readouterr().err
    assert "emtm:fixed" in err and "single:regress" in err


def test_ablation_processes_share_a_folder(tiny_data: Path, tmp_path: Path, capsys) -> None:
    """A (row, seed) locked by another process is left to it; results written meanwhile are merged."""
    from emtm.experiments.ablate import locked_state
    from emtm.io import claim

    out = tmp_path / "ablation"
    args = ["ablate", "--data", str(tiny_data), "--teachers", "x.h5", "--out", str(out), "--seeds", "2"]
    args += ["--epochs", "1", "--rows", "1", "--device", "cpu"]
    out.mkdir()
    with locked_state(out) as state:  # another process finished a row of its own in this folder
        metrics = {"r1@0.3": 3.0, "r1@0.5": 2.0, "r1@0.7": 1.0, "miou": 4.0}
        state["rows"]["elsewhere"] = {"seeds": {"0": metrics}, "params": 1, "gflops": 1.0}
    with claim(out / "student-alone" / "seed1") as mine:  # another process is training seed 1
        assert mine
        assert main(args) == 0
        printed = capsys.readouterr().out
        assert "1 run(s) were being trained by another emtm ablate process" in printed
        assert "student alone, seed 1" in printed
    state = json.loads((out / "ablation.json").read_text())
    assert list(state["rows"]["student alone"]["seeds"]) == ["0"]
    assert state["rows"]["elsewhere"]["seeds"]["0"]["r1@0.7"] == 1.0
    assert not (out / "student-alone" / "seed1").exists()
    assert main(args) == 0  # the lock is free again: seed 1 is trained now, seed 0 is kept
    assert "another emtm ablate process" not in capsys.readouterr().out
    state = json.loads((out / "ablation.json").read_text())
    assert sorted(state["rows"]["student alone"]["seeds"]) == ["0", "1"]


def test_ablation_resumes_a_run_stopped_part_way(tiny_data: Path, tmp_path: Path, capsys) -> None:
    """A (row, seed) whose process died after its first epoch continues from that checkpoint."""
    from emtm.config import TrainConfig
    from emtm.engine.train import train

    out = tmp_path / "ablation"
    run_dir = out / "student-alone" / "seed0"
    cfg = TrainConfig(
        data=str(tiny_data.resolve()), model="student", optim={"epochs": 2, "lr": 1e-3},
        run={"seed": 0, "device": "cpu", "progress": False},
    )  # fmt: skip

    class Killed(Exception):
        pass

    def die_after_first(epoch: int, row: dict) -> None:
        raise Killed

    with pytest.raises(Killed):
        train(cfg, run_dir, on_epoch_end=die_after_first)
    first = (run_dir / "log.csv").read_text().splitlines()[1]
    args = ["ablate", "--data", str(tiny_data), "--teachers", "x.h5", "--out", str(out), "--seeds", "1"]
    assert main([*args, "--epochs", "2", "--rows", "1", "--device", "cpu"]) == 0
    assert "seed0: resuming student (2 epochs)" in capsys.readouterr().out
    log = (run_dir / "log.csv").read_text().splitlines()
    assert len(log) == 3 and log[1] == first  # epoch 1 kept as it was, epoch 2 trained on top of it
    state = json.loads((out / "ablation.json").read_text())
    assert list(state["rows"]["student alone"]["seeds"]) == ["0"]


def test_a_stopped_ablation_says_to_run_the_same_command_again(monkeypatch, capsys) -> None:
    """SIGTERM inside `emtm ablate` exits 143 and points at the ablate command, not at `emtm train`."""
    from emtm.engine.signals import TrainingStopped
    from emtm.experiments import ablate

    def stopped(*args, **kwargs):
        raise TrainingStopped(
            "stopped by SIGTERM; checkpoint saved: S. Resume with: emtm train --resume", 15, "x (epoch 8)"
        )

    monkeypatch.setattr(ablate, "run_ablation", stopped)
    assert main(["ablate", "--data", "d.yaml", "--teachers", "x.h5", "--out", "unused"]) == 143
    err = capsys.readouterr().err
    assert "Run the same emtm ablate command again" in err and "checkpoint saved: x (epoch 8)" in err
    assert "emtm train" not in err


def test_ablation_evaluates_a_finished_run_of_the_same_config_instead_of_training(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    """--reuse: seed 0 of "student alone" is the run trained before (other thread count), not a new one;
    seed 1, and any run whose config differs (here the learning rate), is trained."""
    from emtm.config import TrainConfig
    from emtm.experiments.ablate import same_training
    from emtm.experiments.pipeline import train_step

    earlier = tmp_path / "student_alone"
    cfg = TrainConfig(
        data=str(tiny_data.resolve()), model="student", optim={"epochs": 1, "lr": 1e-3},
        run={"seed": 0, "device": "cpu", "progress": True, "threads": 2},
    )  # fmt: skip
    train_step(cfg, earlier)
    assert same_training(cfg.model_copy(update={"run": cfg.run.model_copy(update={"threads": 1})}), earlier)
    assert not same_training(
        cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 2e-3})}), earlier
    )
    out = tmp_path / "ablation"
    args = ["ablate", "--data", str(tiny_data), "--teachers", "x.h5", "--out", str(out), "--rows", "1"]
    args += ["--epochs", "1", "--device", "cpu", "--threads", "1", "--reuse", str(earlier)]
    assert main([*args, "--seeds", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"student alone, seed 0: the finished run {earlier} has this config, evaluated" in printed
    assert re.search(r"student alone, seed 1: test R1@0\.7 \d+\.\d\d, mIoU \d+\.\d\d", printed)
    # nothing trained in the reused seed's folder: it holds the test queries' IoUs alone
    assert [f.name for f in (out / "student-alone" / "seed0").iterdir()] == ["test_ious.json"]
    assert (out / "student-alone" / "seed1" / "model.safetensors").exists()
    row = json.loads((out / "ablation.json").read_text())["rows"]["student alone"]
    assert row["runs"] == {"0": str(earlier.resolve())}
    from emtm.data.dataset import split_dataset
    from emtm.engine.checkpoint import load_run
    from emtm.engine.evaluate import evaluate

    run = load_run(earlier, device="cpu")
    direct = evaluate(
        run.model, split_dataset(cfg.data, "test", run.vocab, 0), run.cfg.eval, "cpu", batch_size=128
    )
    assert row["seeds"]["0"]["r1@0.7"] == direct["r1@0.7"] and row["seeds"]["0"]["miou"] == direct["miou"]
    assert main([*args[:-2], "--seeds", "1", "--lr", "2e-3", "--out", str(tmp_path / "other")]) == 0
    assert (tmp_path / "other" / "student-alone" / "seed0" / "model.safetensors").exists()
    with pytest.raises(SystemExit) as stop:  # argparse refuses it, naming the flag
        main([*args, "--seeds", "1", "--threads", "0"])
    assert (
        stop.value.code == 2
        and "argument --threads: '0': expected an integer >= 1" in capsys.readouterr().err
    )


def test_gap_over_seeds_uses_the_means_and_sample_std(load_benchmark) -> None:
    gap_seeds = load_benchmark("gap_seeds")
    alone = {"mean": 27.0, "std": 6.0, "n_seeds": 3, "gflops": 0.08}
    emtm = {"mean": 33.0, "std": 0.5, "n_seeds": 3, "gflops": 0.08}
    result = gap_seeds.gap_over_seeds([31.0, 37.0, 34.0], alone, {"EMTM": emtm}, teacher_gflops=0.64)
    assert result["teacher"]["mean"] == pytest.approx(34.0) and result["teacher"]["std"] == pytest.approx(3.0)
    assert result["gap"] == pytest.approx(7.0)
    assert (result["gap_worst_teacher_seed"], result["gap_best_teacher_seed"]) == (4.0, 10.0)
    group = result["emtm"]["EMTM"]
    assert group["recovered"] == pytest.approx(6 / 7) and group["recovered_of_best_seed"] == pytest.approx(
        0.6
    )
    assert group["flops_ratio"] == pytest.approx(0.125)
    rows = gap_seeds.table_rows(result, "seqpan")
    assert rows[0][1] == "34.00 ± 3.00" and rows[2][1] == "**7.00**" and "86%" in rows[3][2]
    # no gap: no share to recover
    flat = gap_seeds.gap_over_seeds([20.0], alone, {"EMTM": emtm}, 0.64)
    assert (
        flat["emtm"]["EMTM"]["recovered"] is None and flat["emtm"]["EMTM"]["recovered_of_best_seed"] is None
    )
    assert "no gap" in gap_seeds.table_rows(flat, "seqpan")[3][2]
