"""`make demo` end to end on the tiny preset: teachers, caches, student alone, EMTM, table, figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emtm.cli import main
from emtm.experiments.demo import QUICK_TEACHERS

FIRST_TEACHER = next(iter(QUICK_TEACHERS))
ROWS = ["prior", *[f"teacher: {t}" for t in QUICK_TEACHERS], "student alone", "EMTM student"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    args = [
        "demo",
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--out",
        str(out / "runs"),
        "--data-dir",
        str(out / "data"),
    ]
    assert main(args) == 0
    return out / "runs"


def test_demo_reports_every_model_and_draws_figures(demo: Path, capsys: pytest.CaptureFixture) -> None:
    report = json.loads((demo / "report.json").read_text())
    assert list(report) == ROWS
    for row in report.values():
        assert 0 <= row["r1@0.7"] <= row["r1@0.5"] <= row["r1@0.3"] <= 100
        assert row["n_queries"] == report["prior"]["n_queries"] > 0
    # the EMTM student is the student architecture: same FLOPs and params, below the proposal teacher
    assert report["EMTM student"]["gflops"] == pytest.approx(report["student alone"]["gflops"])
    assert report["EMTM student"]["params_m"] == pytest.approx(report["student alone"]["params_m"])
    assert report["EMTM student"]["gflops"] < report["teacher: proposals"]["gflops"]
    assert all(report[name]["train_s"] > 0 for name in ROWS[1:])
    assert "| EMTM student |" in (demo / "report.md").read_text()
    kau = json.loads((demo / "emtm" / "kau.json").read_text())  # the KAU's weights on validation
    assert [t["teacher"] for t in kau["teachers"]] == list(QUICK_TEACHERS)
    assert sum(t["weight_start"] for t in kau["teachers"]) == pytest.approx(1.0, abs=1e-4)
    # one teacher cache per teacher on train, and on test for the figures
    for teacher in QUICK_TEACHERS:
        assert (demo / "caches" / f"{teacher}.h5").exists() and (
            demo / "caches" / "test" / f"{teacher}.h5"
        ).exists()
    figures = sorted((demo / "figures").glob("*.png"))
    ious = json.loads((demo / "per_query_iou.json").read_text())
    assert set(ious) == set(ROWS)
    for figure in figures:
        kind, sample_id = figure.stem.split("_", 1)
        gain = ious["EMTM student"][sample_id] - ious["student alone"][sample_id]
        assert (gain > 0) if kind == "better" else (gain < 0)
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rerun_keeps_finished_runs(demo: Path, capsys: pytest.CaptureFixture) -> None:
    before = (demo / "emtm" / "model.safetensors").stat().st_mtime_ns
    data = demo.parent / "data"
    assert (
        main(["demo", "--preset", "tiny", "--epochs", "1", "--out", str(demo), "--data-dir", str(data)]) == 0
    )
    assert "done, kept" in capsys.readouterr().out
    assert (demo / "emtm" / "model.safetensors").stat().st_mtime_ns == before
    # the student export and the KAU table were newer than the EMTM run: kept as well
    for path in ("student/model.safetensors", "kau.json"):
        assert (demo / "emtm" / path).stat().st_mtime_ns > before


def test_demo_rerun_refreshes_what_an_emtm_run_retrained_in_place_left_stale(
    demo: Path, capsys: pytest.CaptureFixture
) -> None:
    trained = demo / "emtm" / "model.safetensors"
    teacher = demo / f"teacher_{FIRST_TEACHER}" / "model.safetensors"
    outputs = [demo / "emtm" / "student" / "model.safetensors", demo / "emtm" / "kau.json"]
    stale = {path: path.stat().st_mtime_ns for path in outputs}
    cache = demo / "caches" / f"{FIRST_TEACHER}.h5"
    stale_cache = cache.stat().st_mtime_ns
    teacher.touch()  # as if the teacher had been trained again in place, after its cache
    trained.touch()  # as if the run had been trained again in place, after its export and table
    data = demo.parent / "data"
    assert (
        main(["demo", "--preset", "tiny", "--epochs", "1", "--out", str(demo), "--data-dir", str(data)]) == 0
    )
    for path in outputs:
        assert path.stat().st_mtime_ns > max(stale[path], trained.stat().st_mtime_ns)
    assert cache.stat().st_mtime_ns > max(stale_cache, teacher.stat().st_mtime_ns)
    kau = json.loads((demo / "emtm" / "kau.json").read_text())
    assert [t["teacher"] for t in kau["teachers"]] == list(QUICK_TEACHERS)


def test_the_full_demo_plan_has_three_teachers_and_the_quick_one_two() -> None:
    from emtm.experiments.demo import DEMO_TEACHERS, demo_plan

    full, quick = demo_plan(full=True), demo_plan(full=False)
    assert list(full.teachers) == list(DEMO_TEACHERS) == ["seqpan", "proposals", "regress"]
    assert list(quick.teachers) == ["proposals", "regress"]
    assert quick.student.optim.epochs < full.student.optim.epochs
