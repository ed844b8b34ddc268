"""The command line end to end on the tiny preset, and its error messages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from emtm.cli import build_parser, main, train_config_from_args
from emtm.errors import ConfigError


def test_synth_train_evaluate_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "synth"
    assert main(["synth", "--preset", "tiny", "--out", str(data), "--feature-format", "h5"]) == 0
    assert (data / "features.h5").exists() and (data / "data.yaml").exists()
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(data / "data.yaml"),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "16",
    ]
    args += ["--lr", "2e-3", "--seed", "3", "--device", "cpu", "--no-progress", "--set", "model_options.d=32"]
    assert main([*args, "--set", "model_options.n_heads=4"]) == 0
    out = capsys.readouterr().out
    assert "best validation epoch" in out and "r1@0.7" in out
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["model_options"]["d"] == 32 and saved["run"]["seed"] == 3 and saved["optim"]["lr"] == 2e-3

    report = tmp_path / "test.json"
    assert (
        main(["evaluate", "--run", str(run), "--split", "test", "--json", str(report), "--no-progress"]) == 0
    )
    metrics = json.loads(report.read_text())
    for key in ("r1@0.3", "r1@0.5", "r1@0.7", "r5@0.3", "r5@0.5", "r5@0.7", "miou"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["protocol"] == "raw" and metrics["n_queries"] > 0
    assert metrics["r5@0.3"] >= metrics["r1@0.3"] >= metrics["r1@0.5"] >= metrics["r1@0.7"]

    quantized = tmp_path / "q.json"
    main(
        ["evaluate", "--run", str(run), "--protocol", "quantized", "--json", str(quantized), "--no-progress"]
    )
    assert json.loads(quantized.read_text())["protocol"] == "quantized"

    features = tmp_path / "video.npy"
    np.save(features, np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32))
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--features", str(features), "--duration", "31.2",
                 "--query", "a person opens the door", "--top-k", "3"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "opens the door" in table and table.count("│ 3 ") == 1

    # resume a finished run: nothing left to do, still a clean exit
    assert (
        main(["train", "--data", str(data / "data.yaml"), "--out", str(run), "--resume", "--no-progress"])
        == 0
    )


def test_errors_are_clear_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--data", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "missing.yaml: file not found" in capsys.readouterr().err
    bad = tmp_path / "data.yaml"
    bad.write_text("format: charades\nsplits: {test: t.txt}\nfeatures: f\n")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "data.yaml" in err and "format" in err
    bad.write_text("format: charades_sta\nsplits: {test: t.txt}\nfeatures: f\n")  # valid for evaluation only
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert f"{bad}: no 'train' split, and training needs one" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path / "nowhere")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_overrides_and_unknown_keys() -> None:
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d.yaml", "--out", "o", "--set", "optim.warmup_epochs=2"])
    assert train_config_from_args(args).optim.warmup_epochs == 2
    args = parser.parse_args(["train", "--data", "d.yaml", "--out", "o", "--set", "optim.nope=1"])
    with pytest.raises(ConfigError, match="optim.nope"):
        train_config_from_args(args)
    args = parser.parse_args(["train", "--data", "d.yaml", "--out", "o", "--set", "model_options.width=1"])
    with pytest.raises(ConfigError, match="model.width"):
        train_config_from_args(args)
    args = parser.parse_args(["train", "--data", "d.yaml", "--out", "o", "--set", "optim.lr=[1"])
    with pytest.raises(ConfigError, match=r"--set 'optim.lr=\[1': the value is not valid YAML"):
        train_config_from_args(args)


def test_a_broken_run_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "config.json").write_text('{"format_version": 1, "train": {"data": "d.yaml"}}')
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "config.json: missing or malformed section" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{not json")
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "config.json: not readable JSON" in capsys.readouterr().err


def test_synth_help_names_every_preset_and_an_unknown_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from emtm.data.pixels import PIXEL_PRESETS
    from emtm.data.synth import PRESETS as SYNTH_PRESETS

    PRESETS = [*SYNTH_PRESETS, *PIXEL_PRESETS]
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    preset = next(a for a in commands.choices["synth"]._actions if a.dest == "preset")
    assert [name for name in PRESETS if name not in preset.help.replace(",", " ").split()] == []
    assert main(["synth", "--preset", "huge", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'huge'" in err and all(name in err for name in PRESETS)
