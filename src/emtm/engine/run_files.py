"""What a training run writes besides checkpoints (metrics.json, log.csv, curve.png, TensorBoard), and
the check that a new run does not start over a trained one."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emtm.errors import EmtmError
from emtm.io import atomic_open, atomic_path, write_json

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from emtm.models.base import GroundingModel


def open_tensorboard(run_dir: Path) -> SummaryWriter | None:
    """A TensorBoard writer in run_dir/tensorboard when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def write_metrics(
    run_dir: Path, history: list[dict[str, Any]], best: dict[str, Any] | None, model: GroundingModel
) -> None:
    write_json(run_dir / "metrics.json", {"best": best, "history": history, "n_trainable": model.n_trainable})
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    with atomic_open(run_dir / "log.csv") as handle:
        handle.write(buffer.getvalue())
    plot_curve(run_dir / "curve.png", history)


def plot_curve(path: Path, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.2))
    if any("train_loss" in row for row in history):
        ax_loss.plot(epochs, [row.get("train_loss", float("nan")) for row in history], marker="o")
    ax_loss.set(title="training loss", xlabel="epoch")
    for key in ("val_r1@0.3", "val_r1@0.5", "val_r1@0.7", "val_miou"):
        ax_val.plot(epochs, [row[key] for row in history], marker=".", label=key[4:])
    ax_val.set(title="validation (%)", xlabel="epoch")
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# What a run directory holds once training has started, and what --overwrite removes first.
RUN_FILES = (
    "config.json", "vocab.json", "log.csv", "metrics.json", "model.safetensors", "last.safetensors",
    "last_state.pt", "curve.png", "kau.json",
)  # fmt: skip
TRAINED_FILES = ("model.safetensors", "last.safetensors", "last_state.pt")


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over trained work (weights or a checkpoint) unless `overwrite`, which
    removes the old run's files first; a folder with other files in it is left alone."""
    if resume:
        return
    trained = [name for name in TRAINED_FILES if (run_dir / name).exists()]
    if not trained:
        return
    if not overwrite:
        metrics = run_dir / "metrics.json"
        state = (
            "a finished run"
            if metrics.exists() and (run_dir / "model.safetensors").exists()
            else ("a stopped run")
        )
        raise EmtmError(
            f"{run_dir} already holds {state} ({', '.join(trained)}); nothing was changed. Continue it "
            f"with --resume, replace it with --overwrite, or give another --out"
        )
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
