"""The plain recurrent baseline (`bigru`), the query-sensitivity diagnostic and the seed statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emtm.config import TrainConfig
from emtm.data.records import Sample
from emtm.engine.evaluate import SplitPredictions
from emtm.engine.sensitivity import distinct_top1, swap_partners
from emtm.engine.train import train
from emtm.stats import mean_ci, paired_difference, t975, verdict


def sample(i: int, video: str, start: float, end: float, sentence: str = "a") -> Sample:
    return Sample(f"q{i}", video, 30.0, start, end, sentence)


@pytest.fixture(scope="module")
def bigru_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bigru") / "run"
    cfg = TrainConfig(
        data=str(tiny_data), model="bigru", model_options={"d": 32},
        optim={"epochs": 2, "batch_size": 16, "lr": 2e-3}, run={"progress": False, "device": "cpu"},
    )  # fmt: skip
    train(cfg, out)
    return out


def test_bigru_trains_and_evaluates_with_sensitivity(bigru_run: Path) -> None:
    log = (bigru_run / "log.csv").read_text().splitlines()
    assert len(log) == 3  # header and two epochs
    first, last = (float(line.split(",")[3]) for line in (log[1], log[2]))  # train_loc
    assert last < first, "the loss goes down"
    out = bigru_run / "test.json"
    subprocess.run(
        [sys.executable, "-m", "emtm", "evaluate", "--run", str(bigru_run), "--sensitivity",
         "--no-progress", "--json", str(out)], check=True, capture_output=True,
    )  # fmt: skip
    metrics = json.loads(out.read_text())
    sens = metrics["sensitivity"]
    assert metrics["model"] == "bigru" and 0 <= metrics["r1@0.5"] <= 100
    assert sens["n_videos"] > 0 and 0 <= sens["distinct_top1_share"] <= 100
    assert sens["n_swapped"] > 0
    assert sens["drop_r1@0.5"] == pytest.approx(sens["own_r1@0.5"] - sens["swapped_r1@0.5"])


def test_sensitivity_refuses_prediction_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emtm", "evaluate", "--preds", "p.jsonl", "--gt", "g.jsonl", "--sensitivity"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "--sensitivity" in done.stderr and "--run" in done.stderr


def test_distinct_top1_counts_videos_whose_queries_share_one_answer() -> None:
    samples = [sample(0, "v1", 0, 5), sample(1, "v1", 10, 20), sample(2, "v2", 0, 5),
               sample(3, "v2", 10, 20), sample(4, "v2", 20, 30), sample(5, "v3", 0, 5)]  # fmt: skip
    same, other = np.array([[1.0, 4.0]]), np.array([[11.0, 19.0]])
    windows = [same, same, same, other, same, same]  # v1: one answer; v2: two of three; v3: one query
    preds = SplitPredictions(windows, [np.ones(1)] * 6, samples, np.full(6, 30))
    out = distinct_top1(preds)
    assert out["n_videos"] == 2
    assert out["distinct_top1_share"] == 50.0 and out["all_distinct_share"] == 0.0


def test_swap_partners_stay_in_the_video_and_pick_another_moment() -> None:
    samples = [sample(0, "v1", 0, 5), sample(1, "v1", 0.5, 5), sample(2, "v1", 10, 20), sample(3, "v2", 0, 5)]
    partners = swap_partners(samples)
    assert partners[0] == 2 and partners[1] == 2  # q0 and q1 overlap (IoU 0.9): not each other
    assert partners[2] in (0, 1)
    assert 3 not in partners  # v2 has one query


def test_t_quantiles_and_intervals_match_a_table() -> None:
    assert t975(1) == 12.706 and t975(4) == 2.776 and t975(30) == 2.042
    assert t975(60) == pytest.approx(2.000, abs=1e-3) and t975(120) == pytest.approx(1.980, abs=1e-3)
    stat = mean_ci([1.0, 2.0, 3.0])  # mean 2, std 1, 4.303 / sqrt(3)
    assert stat["mean"] == 2.0 and stat["std"] == 1.0 and stat["ci"] == pytest.approx(2.4843, abs=1e-4)
    assert mean_ci([5.0]) == {"mean": 5.0, "std": None, "ci": None, "n": 1}


def test_paired_difference_pairs_runs_and_says_when_zero_is_excluded() -> None:
    a, b = [71.0, 72.5, 70.0, 73.0, 71.5], [70.0, 71.0, 69.5, 71.0, 70.5]
    diff = paired_difference(a, b)  # differences 1, 1.5, 0.5, 2, 1: mean 1.2, std 0.5701
    assert diff["mean"] == pytest.approx(1.2) and diff["std"] == pytest.approx(0.570088, abs=1e-6)
    assert diff["ci"] == pytest.approx(2.776 * 0.570088 / 5**0.5, abs=1e-6)
    assert diff["excludes_zero"] and verdict(diff, "A", "B") == "A beats B"
    # The same means unpaired would overlap; a noisy pairing is within noise.
    noisy = paired_difference([71.0, 60.0, 80.0], [70.0, 70.0, 70.0])
    assert not noisy["excludes_zero"] and verdict(noisy) == "within noise"
    # Three seeds whose CI excludes 0 are an indication, not a claim (five seeds are the bar).
    three = paired_difference([72.0, 73.0, 74.0], [70.0, 70.5, 71.0])
    assert three["excludes_zero"] and verdict(three, "A", "B") == "A ahead of B (n = 3, an indication)"
    assert verdict(three, "A", "B", min_n=3) == "A beats B"
    assert verdict(paired_difference([1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 2.1, 2.2, 2.3, 2.4])) == "B beats A"
    # A difference under 0.01% of B is no difference, however narrow the interval.
    same = paired_difference([3.5, 2.0, 4.25], [3.5 + 1e-4, 2.0 + 2e-4, 4.25 + 1e-4])
    assert same["negligible"] and not same["excludes_zero"] and verdict(same) == "level (under 0.01%)"
    assert not paired_difference([3.5, 2.0, 4.25], [3.6, 2.1, 4.35])["negligible"]
    with pytest.raises(ValueError, match="equal counts"):
        paired_difference([1.0], [1.0, 2.0])


def test_generalise_refuses_a_kept_run_trained_with_other_settings(bigru_run: Path, load_benchmark) -> None:
    """A run linked in from another study (here: lr 2e-3, batch 16, d 32) is not a default-settings run."""
    generalise = load_benchmark("generalise")
    why = generalise.settings_mismatch(bigru_run, "bigru", [], seed=0, epochs=2)
    assert "optim.lr 0.002, not 0.0005" in why and "optim.batch_size 16, not 32" in why
    assert "model_options.d 32, not 128" in why  # no option asked for: the model's defaults are
    asked = ["optim.lr=2e-3", "optim.batch_size=16", "model_options.d=32"]
    assert generalise.settings_mismatch(bigru_run, "bigru", asked, seed=0, epochs=2) is None
    assert "seed 0, not 1" in generalise.settings_mismatch(bigru_run, "bigru", asked, seed=1, epochs=2)
    assert "model_options.d 32, not 64" in generalise.settings_mismatch(
        bigru_run, "bigru", ["optim.lr=2e-3", "optim.batch_size=16", "model_options.d=64"], seed=0, epochs=2
    )
    with pytest.raises(SystemExit, match="kept run trained with other settings"):
        generalise.run_one("x", "bigru", [], 0, 2, 1, bigru_run)


def test_generalise_table_joins_the_folders_and_keeps_their_paired_differences(
    load_benchmark, tmp_path: Path
) -> None:
    table = load_benchmark("generalise_table")
    ci = lambda mean: {"mean": mean, "std": 1.0, "ci": 2.0, "n": 3}  # noqa: E731
    diff = {"mean": -4.0, "std": 0.5, "ci": 1.2, "n": 3, "negligible": False, "excludes_zero": True}
    for name, bench in (("a", "pixels"), ("b", "hard")):
        summary = {
            bench: {
                "student": {"r1@0.5": ci(50.0)},
                "bigru": {"r1@0.5": ci(46.0), "vs_first": {"r1@0.5": diff}},
            }
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "generalise.json").write_text(json.dumps({"summary": summary}))
    got = table.collect([tmp_path / "a", tmp_path / "b"], ["student", "bigru"])
    assert list(got) == ["pixels", "hard"] and got["hard"]["bigru"]["vs_first"] == diff
    assert got["pixels"]["student"]["vs_first"] is None
    with pytest.raises(SystemExit, match="has no \\['student-none'\\]"):
        table.collect([tmp_path / "a"], ["student", "student-none"])
    with pytest.raises(SystemExit, match="in two of the folders"):
        table.collect([tmp_path / "a", tmp_path / "a"], ["student"])
