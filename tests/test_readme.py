"""The README's path from a built-in benchmark to a served model runs as written: every command of the
block after its `readme-path` marker, in order, in an empty folder."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from emtm.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    marker = text.index("<!-- readme-path:")
    block = re.search(r"```\n(.*?)```", text[marker:], re.S)
    assert block, "README: no code block after the readme-path marker"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def test_the_block_is_the_whole_path() -> None:
    verbs = [cmd[1] for cmd in readme_commands()]
    assert all(cmd[0] == "emtm" for cmd in readme_commands())
    for verb in ("synth", "train", "teachers", "distill", "evaluate", "export", "predict"):
        assert verb in verbs


def test_readme_path_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for cmd in readme_commands():
        args = cmd[1:]
        if cmd[1] in ("train", "teachers", "distill", "evaluate") or "--data" in args:
            args = [*args, "--no-progress"]
        assert main(args) == 0, f"README command failed: {shlex.join(cmd)}\n{capsys.readouterr().err}"
    out = capsys.readouterr().out
    assert "does the model read the sentence?" in out  # evaluate --sensitivity printed its table
    metrics = json.loads((tmp_path / "runs/emtm/test.json").read_text())
    assert 0 <= metrics["r1@0.7"] <= 100 and metrics["n_queries"] > 0
    assert (tmp_path / "models/emtm-student/model.safetensors").exists()
    lines = (tmp_path / "runs/emtm/preds.jsonl").read_text().splitlines()
    assert len(lines) == metrics["n_queries"] and "pred_relevant_windows" in json.loads(lines[0])
