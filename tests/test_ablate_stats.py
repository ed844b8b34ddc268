"""The ablation summary's statistics: 95% CIs and paired differences against the right baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emtm.experiments.ablation_report import comparisons, summarise, summary_rows


def row(key: str, r17: list[float]) -> dict:
    seeds = {str(i): dict.fromkeys(("r1@0.3", "r1@0.5", "r1@0.7", "miou"), v) for i, v in enumerate(r17)}
    return {"key": key, "params": 1e5, "gflops": 0.1, "seeds": seeds}


STATE = {
    "rows": {
        "student alone": row("student", [20.0, 21.0, 19.0, 22.0, 20.0]),
        "student + a": row("single:a", [23.0, 24.0, 22.0, 25.0, 23.5]),
        "student + b": row("single:b", [21.0, 22.0, 20.0, 22.0, 21.0]),
        "student + KAU + shared encoder (EMTM)": row("emtm", [24.0, 24.5, 23.0, 25.5, 23.0]),
    }
}


def test_rows_carry_their_95_percent_interval() -> None:
    s = summarise(STATE["rows"]["student alone"])  # mean 20.4, std 1.1402, t(4) = 2.776
    assert s["key"] == "student" and s["n_seeds"] == 5
    assert s["r1@0.7"]["mean"] == pytest.approx(20.4)
    assert s["r1@0.7"]["ci"] == pytest.approx(2.776 * 1.140175 / 5**0.5, abs=1e-5)


def test_paired_differences_against_the_student_and_the_best_single_teacher() -> None:
    versus = comparisons(STATE)
    emtm = versus["student + KAU + shared encoder (EMTM)"]
    assert emtm["vs_best_single"]["row"] == "student + a"  # a's mean 23.5 beats b's 21.2
    to_student = emtm["vs_student"]["r1@0.7"]  # differences 4, 3.5, 4, 3.5, 3: mean 3.6
    assert to_student["mean"] == pytest.approx(3.6) and to_student["excludes_zero"]
    to_best = emtm["vs_best_single"]["r1@0.7"]  # differences 1, 0.5, 1, 0.5, -0.5: mean 0.5
    assert to_best["mean"] == pytest.approx(0.5) and not to_best["excludes_zero"]
    assert "vs_student" not in versus["student alone"]
    table = {r[0]: r for r in summary_rows(STATE)}
    assert table["student + KAU + shared encoder (EMTM)"][-2].endswith("*")
    assert not table["student + KAU + shared encoder (EMTM)"][-1].endswith("*")


def test_a_difference_over_fewer_than_five_seeds_is_marked_as_an_indication() -> None:
    three = {
        "rows": {
            name: {**r, "seeds": dict(list(r["seeds"].items())[:3])} for name, r in STATE["rows"].items()
        }
    }
    table = {r[0]: r for r in summary_rows(three)}
    assert table["student + KAU + shared encoder (EMTM)"][-2].endswith("†")  # 4, 3.5, 4: excludes 0


def test_the_best_validation_epoch_is_reported_and_filled_in_for_rows_recorded_without_it(
    tmp_path: Path,
) -> None:
    from emtm.experiments.ablation_report import best_epoch_text, fill_best_epochs, slug

    state = {"rows": {"student alone": {"seeds": {"0": {}, "1": {}}, "runs": {"1": str(tmp_path / "old")}}}}
    for run_dir, best in ((tmp_path / slug("student alone") / "seed0", 6), (tmp_path / "old", 8)):
        run_dir.mkdir(parents=True)
        history = [{"epoch": e} for e in range(1, 9)]
        (run_dir / "metrics.json").write_text(json.dumps({"best": {"epoch": best}, "history": history}))
    fill_best_epochs(tmp_path, state)  # seed 1 was evaluated from a reused run: its own folder
    assert state["rows"]["student alone"]["best_epoch"] == {"0": [6, 8], "1": [8, 8]}
    summary = summarise({**state["rows"]["student alone"], "seeds": STATE["rows"]["student alone"]["seeds"]})
    assert summary["best_epoch"] == {"per_seed": [6, 8], "of": 8}
    assert best_epoch_text(summary["best_epoch"]) == "6-8 of 8"
    assert best_epoch_text({"per_seed": [8, 8], "of": 8}) == "8 of 8"
    assert best_epoch_text({"per_seed": [], "of": None}) == ""


def test_paired_bootstrap_resamples_queries_as_well_as_seeds() -> None:
    import numpy as np

    from emtm.stats import paired_bootstrap, paired_difference

    rng = np.random.default_rng(0)
    b = rng.choice([0.0, 100.0], size=(5, 300))
    same = paired_bootstrap(b, b)
    assert same["mean"] == same["lo"] == same["hi"] == 0.0 and not same["excludes_zero"]
    shifted = paired_bootstrap(b + 5.0, b)
    assert shifted["lo"] == pytest.approx(5.0) and shifted["hi"] == pytest.approx(5.0)
    assert shifted["excludes_zero"] and (shifted["n_seeds"], shifted["n_queries"]) == (5, 300)

    # Every seed flips the same 20 of 300 queries: the seeds agree exactly (t interval 0, "beats"), but
    # on another test set of 300 queries the gain could be anything from about 4 to 9.5 points.
    b[:, :20] = 0.0
    a = b.copy()
    a[:, :20] = 100.0  # the same 20 misses turned into hits on every seed: +6.67 points
    over_seeds = paired_difference(a.mean(1), b.mean(1))
    boot = paired_bootstrap(a, b)
    assert over_seeds["ci"] == pytest.approx(0.0, abs=1e-9)
    assert boot["hi"] - boot["lo"] > 3.0 and boot["lo"] <= boot["mean"] <= boot["hi"]

    # with no true difference the interval holds 0 about 95% of the time
    covered = 0
    for trial in range(200):
        r = np.random.default_rng(100 + trial)
        x, y = r.choice([0.0, 100.0], size=(2, 5, 200))
        d = paired_bootstrap(x, y, n_boot=400, seed=trial)
        covered += d["lo"] <= 0.0 <= d["hi"]
    assert covered >= 180
    with pytest.raises(ValueError, match="seeds, queries"):
        paired_bootstrap(b, b[:, :10])
