"""`emtm recipe` end to end on tiny stand-ins in the layouts real users have (VSLNet npy, 2D-TAN HDF5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from emtm.cli import main
from emtm.data import synth
from emtm.experiments.recipe import RECIPES, load_recipe

TINY_RECIPE = {
    "format": "charades_sta",
    "splits": {"train": "train.txt", "test": "test.txt"},
    "durations": "durations.json",
    "max_video_len": 32,
    "max_query_len": 20,
    "teachers": ["regress", "seqpan"],
    "temperature": 1.0,
    "student_options": {"d": 32, "n_heads": 4},
    "teacher_options": {"regress": {"d": 32}, "seqpan": {"d": 32, "n_heads": 4, "n_dual": 1}},
    "optim": {"epochs": 1, "batch_size": 16, "lr": 3e-3},
}


def test_paper_recipes_load() -> None:
    for name in RECIPES:
        recipe = load_recipe(name)
        assert len(recipe.teachers) == 3 and recipe.optim.epochs == 100
    assert load_recipe("charades-sta").max_video_len == 64 and load_recipe("tacos").temperature == 3.0


@pytest.mark.parametrize("layout", ["npy", "h5"])
def test_recipe_runs_end_to_end_and_resumes(tmp_path: Path, layout: str, capsys) -> None:
    data = synth.generate(
        synth.PRESETS["tiny"], tmp_path / "data", feature_format=layout, progress=False
    ).parent
    if layout == "npy":  # VSLNet layout: {vid}.npy plus feature_shapes.json
        shapes = {p.stem: list(np.load(p, mmap_mode="r").shape) for p in (data / "features").glob("*.npy")}
        (data / "features" / "feature_shapes.json").write_text(json.dumps(shapes))
    features = data / ("features" if layout == "npy" else "features.h5")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY_RECIPE))
    out = tmp_path / "runs"
    args = ["recipe", str(recipe), "--features", str(features), "--annotations", str(data), "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report) == ["teacher: regress", "teacher: seqpan", "student alone", "EMTM student"]
    assert all(
        row["gflops"] > 0 and row["n_queries"] > 0 and row["ms_per_query"] > 0 for row in report.values()
    )
    assert "| EMTM student |" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main([*args, "--device", "cpu"]) == 0  # resumable: every step is kept
    assert capsys.readouterr().out.count("done, kept") == 4


def test_pipeline_processes_share_a_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    """Runs locked by other processes are left to them: the pipeline trains the next runs, then takes
    each held run as soon as it is freed (whichever is freed first), keeps what the other process
    finished, and a second call keeps the report."""
    import threading
    import time

    from emtm.config import OptimConfig
    from emtm.experiments import pipeline
    from emtm.experiments.pipeline import Plan, Stage, run_pipeline
    from emtm.io import claim

    monkeypatch.setattr(pipeline, "POLL_SECONDS", 0.05)
    data = synth.generate(synth.PRESETS["tiny"], tmp_path / "data", progress=False)
    optim = OptimConfig(epochs=1, batch_size=16, lr=3e-3)
    plan = Plan(
        teachers={"first": Stage("regress", {"d": 32}, optim), "second": Stage("regress", {"d": 16}, optim)},
        student=Stage("student", {"d": 32, "n_heads": 4}, optim),
    )
    out = tmp_path / "pipeline"
    result: dict[str, dict] = {}

    def wait_for(path: Path) -> None:
        deadline = time.monotonic() + 300
        while not path.exists() and worker.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    with claim(out / "teacher_first") as first:  # other processes are training both teachers
        with claim(out / "teacher_second") as second:
            assert first and second
            worker = threading.Thread(target=lambda: result.update(run_pipeline(plan, data, out, "cpu")))
            worker.start()
            wait_for(out / "student_alone" / "model.safetensors")
            time.sleep(0.3)
            assert worker.is_alive()  # waiting: the teachers are the only runs it may not train yet
            assert not (out / "teacher_first").exists() and not (out / "teacher_second").exists()
        wait_for(out / "caches" / "second.h5")  # the teacher freed first is taken at once
        assert worker.is_alive() and not (out / "teacher_first").exists()
    worker.join(timeout=300)
    assert not worker.is_alive()
    printed = capsys.readouterr().out
    assert printed.index("student_alone: training") < printed.index("teacher_first: held by another")
    assert printed.index("teacher_second: training") < printed.index("teacher_first: training")
    assert list(result) == ["teacher: first", "teacher: second", "student alone", "EMTM student"]
    assert (out / "caches" / "first.h5").exists()
    assert run_pipeline(plan, data, out, "cpu") == result  # every step and the report are kept
    printed = capsys.readouterr().out
    assert printed.count("done, kept") == 4 and "newer than every run, kept" in printed


def test_recipe_with_out_of_fold_teacher_caches(tmp_path: Path, capsys) -> None:
    from emtm.distill.cache import TeacherCache
    from emtm.engine.checkpoint import load_run

    data = synth.generate(synth.PRESETS["tiny"], tmp_path / "data", progress=False).parent
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "teachers": ["regress"]}))
    out = tmp_path / "runs"
    args = ["recipe", str(recipe), "--features", str(data / "features"), "--annotations", str(data)]
    args += ["--out", str(out), "--device", "cpu", "--teacher-folds", "2"]
    assert main(args) == 0
    # the teacher's own run on the whole split (its report row), and one run per fold for the cache
    folds = [load_run(out / f"teacher_regress_fold{i}of2") for i in range(2)]
    assert [run.cfg.fold for run in folds] == [(0, 2), (1, 2)]
    assert all(run.cfg.optim.epochs == 2 for run in folds)  # as many updates as the whole-split run
    assert load_run(out / "teacher_regress").cfg.fold is None
    with TeacherCache(out / "caches" / "regress.h5") as cache:
        assert cache.meta.folds == 2 and str(out / "teacher_regress_fold1of2") in cache.meta.source
    assert list(json.loads((out / "report.json").read_text())) == [
        "teacher: regress", "student alone", "EMTM student",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0  # resumable: the fold runs are kept too
    assert capsys.readouterr().out.count("done, kept") == 5
    assert main([*args[:-2], "--teacher-folds", "1"]) == 2
