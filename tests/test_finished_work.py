"""Finished work is never overwritten, and --resume refuses flags that contradict the saved run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emtm.cli import main

FAST = ["--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress",
        "--set", "model_options.d=32", "--set", "model_options.n_heads=4"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *FAST]) == 0
    return out


def test_a_new_run_over_a_finished_one_is_refused(finished_run: Path, tiny_data: Path, capsys) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    assert main(["train", "--data", str(tiny_data), "--out", str(finished_run), *FAST]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before, "nothing was touched"


def test_overwrite_replaces_the_run(finished_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    (copy / "kau.json").write_text("{}")  # a file of the old run that the new one would not write
    args = ["train", "--data", str(tiny_data), "--out", str(copy), *FAST, "--seed", "3", "--overwrite"]
    assert main(args) == 0
    assert json.loads((copy / "config.json").read_text())["train"]["run"]["seed"] == 3
    assert not (copy / "kau.json").exists()


def test_resume_refuses_contradicting_flags(finished_run: Path, tiny_data: Path, capsys) -> None:
    args = ["train", "--data", str(tiny_data), "--out", str(finished_run), "--resume", "--no-progress"]
    assert main([*args, "--epochs", "3", "--set", "optim.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "optim.epochs: saved 1, given 3" in err and "optim.lr: saved" in err and "given 0.01" in err
    assert "--overwrite" in err
    # where it runs is not what it trains: a device or thread count may change on resume
    assert main([*args, "--device", "cpu", "--set", "run.threads=1"]) == 0
