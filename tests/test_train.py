"""The engine end to end on the tiny synthetic benchmark: learning, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emtm.config import TrainConfig
from emtm.engine.checkpoint import load_run
from emtm.engine.train import train


def config(data: Path, model: str = "student", epochs: int = 2, **optim) -> TrainConfig:
    return TrainConfig(
        data=str(data),
        model=model,
        model_options={"d": 32, "n_heads": 4} if model == "student" else {},
        optim={"epochs": epochs, "batch_size": 16, "lr": 2e-3, **optim},
        run={"progress": False, "device": "cpu"},
    )


def test_student_learns_and_beats_the_prior(learnable_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    prior = train(config(learnable_data, "prior", epochs=1), tmp_path / "prior")
    result = train(config(learnable_data, epochs=12), tmp_path / "student")
    losses = [row["train_loss"] for row in result["history"]]
    assert losses[-1] < 0.9 * losses[0], losses
    assert result["best"]["miou"] > prior["best"]["miou"] + 5, (result["best"], prior["best"])
    run_dir = tmp_path / "student"
    for name in (
        "config.json",
        "vocab.json",
        "model.safetensors",
        "last.safetensors",
        "metrics.json",
        "log.csv",
    ):
        assert (run_dir / name).exists(), name
    assert (run_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((run_dir / "log.csv").read_text().splitlines()) == 13  # header + 12 epochs
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train"]["optim"]["epochs"] == 12 and saved["spec"]["video_dim"] == 64


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_data: Path, tmp_path: Path) -> None:
    cfg = config(tiny_data, epochs=3)
    train(cfg, tmp_path / "straight")

    class Stop(Exception):
        pass

    def stop_after_first(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "resumed", on_epoch_end=stop_after_first)
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["history"][-1]["epoch"] == 1
    train(cfg, tmp_path / "resumed", resume=True)
    a = load_file(tmp_path / "straight" / "last.safetensors")
    b = load_file(tmp_path / "resumed" / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    history = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_loaded_run_matches_the_trained_model(tiny_data: Path, tmp_path: Path) -> None:
    train(config(tiny_data, epochs=1), tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.cfg.model == "student" and run.model.n_trainable > 0
    assert not run.model.training


def test_a_thread_count_applies_to_its_call_only(tiny_data: Path, tmp_path: Path) -> None:
    """train() and pipeline.measure() run at the configured thread count and restore the caller's."""
    from emtm.experiments.pipeline import measure

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = config(tiny_data, "prior", epochs=1)
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"threads": 1})})
        seen = []
        train(cfg, tmp_path / "prior", on_epoch_end=lambda epoch, row: seen.append(torch.get_num_threads()))
        assert seen == [1] and torch.get_num_threads() == 2
        measure(tmp_path / "prior", tiny_data, "cpu", threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
