"""Empty and degenerate data: each says what is empty and where, never a traceback or an empty result."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emtm.cli import main


def data_with_test(tiny_data: Path, tmp_path: Path, lines: str) -> Path:
    (tmp_path / "test.txt").write_text(lines)
    cfg = yaml.safe_load(tiny_data.read_text())
    base = tiny_data.parent
    cfg["splits"] = {"train": str(base / cfg["splits"]["train"]), "test": str(tmp_path / "test.txt")}
    cfg["durations"], cfg["features"] = str(base / cfg["durations"]), str(base / cfg["features"])
    out = tmp_path / "data.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


@pytest.mark.parametrize(
    ("lines", "why"),
    [("", "the file holds no query"), ("VID 900.0 950.0##a person sits\n", "queries read were dropped")],
)
def test_an_empty_split_is_an_error_that_says_why(
    lines: str, why: str, tiny_data: Path, teacher_run: Path, tmp_path: Path, capsys
) -> None:
    video = (tiny_data.parent / "train.txt").read_text().split()[0]
    data = data_with_test(tiny_data, tmp_path, lines.replace("VID", video))
    for argv in (["evaluate", "--run", str(teacher_run)], ["predict", "--run", str(teacher_run),
                 "--out", str(tmp_path / "p.jsonl")]):  # fmt: skip
        assert main([*argv, "--data", str(data), "--split", "test", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"split 'test' ({tmp_path / 'test.txt'}) is empty" in err and why in err
    assert not (tmp_path / "p.jsonl").exists()


def test_a_benchmark_needs_both_splits(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--preset", "tiny", "--set", "n_train_videos=0", "--out", str(tmp_path / "d")]) == 2
    assert "n_train_videos (0) and n_test_videos (20) must each be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "d" / "data.yaml").exists()
