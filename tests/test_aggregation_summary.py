"""benchmarks/aggregation_summary.py: paired differences per row, and --pool over teacher sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "aggregation_summary.py"


def ablation(folder: Path, student: list[float], emtm: list[float]) -> str:
    folder.mkdir()

    def seeds(values: list[float]) -> dict[str, dict[str, float]]:
        return {str(s): {"r1@0.5": v + 10, "r1@0.7": v, "miou": v} for s, v in enumerate(values)}

    rows = {
        "student alone": {"key": "student", "seeds": seeds(student)},
        "student + KAU + shared encoder (EMTM)": {"key": "emtm", "seeds": seeds(emtm)},
    }
    (folder / "ablation.json").write_text(json.dumps({"rows": rows}))
    return str(folder)


def summary(*args: str) -> tuple[str, dict]:
    out = Path(args[0]).parent / "out.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--against", "student", "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout, json.loads(out.read_text())


def test_pool_pairs_seeds_within_each_teacher_set(tmp_path: Path) -> None:
    a = ablation(tmp_path / "set0", [70.0, 71.0, 72.0], [71.0, 72.0, 73.0])  # +1 on every seed
    b = ablation(tmp_path / "set1", [60.0, 61.0, 62.0], [63.0, 64.0, 65.0])  # +3 on every seed

    text, stats = summary(a, b)  # without --pool the later folder's rows replace the earlier's
    assert stats["emtm"]["student"]["n"] == 3 and stats["emtm"]["student"]["mean"] == 3.0
    assert "| student + KAU + shared encoder (EMTM) | 3 |" in text

    text, stats = summary(a, b, "--pool")
    pooled = stats["emtm"]["student"]
    assert pooled["n"] == 6 and abs(pooled["mean"] - 2.0) < 1e-9  # six pairs: three +1, three +3
    assert pooled["ci"] > 0  # the pairs differ, so the CI is not zero
    assert "| student + KAU + shared encoder (EMTM) | 6 | 78.00 ± " in text  # R1@0.5: 68 + 10


def test_kept_query_ious_add_a_bootstrap_over_seeds_and_queries(tmp_path: Path) -> None:
    from emtm.experiments.ablation_report import seed_dir, write_query_ious

    ids = [f"q{j}" for j in range(50)]
    folders = []
    for i, gain in enumerate((4, 6)):  # rows' hits on 50 queries: EMTM turns `gain` misses into hits
        folder = tmp_path / f"set{i}"
        base = [20.0 * (1 + s) for s in range(3)]
        folders.append(ablation(folder, base, [b + 2 * gain for b in base]))
        for s in range(3):
            student = np.array([0.9] * (10 * (1 + s)) + [0.1] * (50 - 10 * (1 + s)))
            emtm = student.copy()
            emtm[np.flatnonzero(student < 0.7)[:gain]] = 0.8
            write_query_ious(seed_dir(folder, "student alone", s), ids, student)
            write_query_ious(seed_dir(folder, "student + KAU + shared encoder (EMTM)", s), ids, emtm)
    text, stats = summary(*folders, "--pool")
    boot = stats["emtm"]["student"]["bootstrap"]
    assert (boot["n_seeds"], boot["n_queries"]) == (6, 50) and boot["mean"] == pytest.approx(10.0)
    assert 0 < boot["lo"] < 10.0 < boot["hi"]
    assert f"+10.00 ± {stats['emtm']['student']['ci']:.2f}* (n=6) [{boot['lo']:+.2f}, " in text
