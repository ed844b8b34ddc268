"""`--out -` and `--json -` write to stdout (tables to stderr); single-video predict writes JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def emtm(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emtm", *argv], capture_output=True, text=True)


def test_predict_one_video_as_json(teacher_run: Path, tmp_path: Path) -> None:
    dim = json.loads((teacher_run / "config.json").read_text())["spec"]["video_dim"]
    np.save(tmp_path / "f.npy", np.random.default_rng(0).random((20, dim), dtype=np.float32))
    args = ["predict", "--run", str(teacher_run), "--features", str(tmp_path / "f.npy"), "--duration", "20"]
    args += ["--query", "a person sits", "--query", "someone opens a door", "--top-k", "2"]
    done = emtm(*args, "--json", "-")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # stdout holds the JSON alone; the tables went to stderr
    assert [q["query"] for q in record["queries"]] == ["a person sits", "someone opens a door"]
    assert all(len(q["moments"]) == 2 for q in record["queries"]) and "rank" in done.stderr
    filed = emtm(*args, "--json", str(tmp_path / "m.json"))
    assert json.loads((tmp_path / "m.json").read_text()) == record and "rank" in filed.stdout


def test_predict_a_split_to_stdout(teacher_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    done = emtm("predict", "--run", str(teacher_run), "--data", str(tiny_data), "--out", "-", "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines and all({"qid", "vid", "query", "pred_relevant_windows"} <= set(line) for line in lines)
    assert not Path("-").exists() and "predictions of" in done.stderr
