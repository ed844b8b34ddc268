"""The training loop shared by every model: AdamW, warm-up + linear decay, clipping, AMP, validation,
best/last checkpoints, CSV log and a curve plot. `resume=True` continues from the last finished epoch
and ends with the same weights as an uninterrupted run (CPU).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emtm.config import TrainConfig, load_data_config
from emtm.data.dataset import GroundingDataset, Prepared, collate, prepare
from emtm.data.text import Vocab, load_word_vectors
from emtm.engine.checkpoint import (
    SpecInfo,
    load_train_state,
    load_weights,
    save_train_state,
    save_weights,
    write_run_config,
)
from emtm.engine.evaluate import evaluate, to_device
from emtm.errors import EmtmError
from emtm.io import atomic_open, atomic_path, write_json
from emtm.models.base import GroundingModel
from emtm.models.registry import build_model, model_config

log = logging.getLogger("emtm.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EmtmError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def param_groups(model: GroundingModel, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and tables; never norms, biases or other vectors."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_linear(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


@dataclass
class RunData:
    prepared: Prepared
    vocab: Vocab
    spec: SpecInfo
    word_vectors: torch.Tensor | None
    datasets: dict[str, GroundingDataset]


def build_run_data(cfg: TrainConfig, run_dir: Path, resume: bool) -> RunData:
    data_cfg = load_data_config(cfg.data)
    prepared = prepare(data_cfg, cfg.run.seed)
    train_samples = prepared.splits["train"].samples
    if resume and (run_dir / "vocab.json").exists():
        vocab, matrix = Vocab.load(run_dir / "vocab.json"), None
        word_dim = int(load_json(run_dir / "config.json")["spec"]["word_dim"])
    else:
        word_vectors = load_word_vectors(data_cfg.word_vector_spec(), progress=cfg.run.progress)
        vocab = Vocab.build((s.sentence for s in train_samples), word_vectors)
        matrix = torch.from_numpy(vocab.embedding_matrix(word_vectors))
        word_dim = word_vectors.dim
    spec = SpecInfo(
        prepared.store.dim,
        data_cfg.max_video_len,
        len(vocab),
        word_dim,
        vocab.n_chars,
        data_cfg.max_query_len,
        data_cfg.max_word_chars,
    )
    datasets = {
        name: GroundingDataset(split.samples, prepared.store, vocab, data_cfg)
        for name, split in prepared.splits.items()
    }
    return RunData(prepared, vocab, spec, matrix, datasets)


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def is_better(new: dict[str, Any], best: dict[str, Any] | None, key: str) -> bool:
    if best is None:
        return True
    return (new[key], new["miou"]) > (best[key], best["miou"])


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.data` into `run_dir`; returns the metrics summary.

    `on_epoch_end(epoch, row)` is called after each epoch's checkpoint is safely written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    data = build_run_data(cfg, run_dir, resume)
    model = build_model(
        cfg.model, model_config(cfg.model, cfg.model_options), data.spec.to_spec(data.word_vectors)
    )
    model.fit_prior(data.datasets["train"].samples)
    model.to(device)
    if not resume:
        write_run_config(run_dir, cfg, data.spec, {"splits": split_summary(data)})
        data.vocab.save(run_dir / "vocab.json")

    train_set, val_set = data.datasets["train"], data.datasets["val"]
    steps_per_epoch = math.ceil(len(train_set) / cfg.optim.batch_size)
    total_steps = steps_per_epoch * cfg.optim.epochs
    trainable = model.n_trainable > 0
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.optim.weight_decay) if trainable else [torch.nn.Parameter(torch.zeros(1))],
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear(total_steps, round(cfg.optim.warmup_epochs * steps_per_epoch))
    )
    dtype = amp_dtype(device, cfg.run.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 0
    if resume:
        state = load_train_state(run_dir)
        load_weights(model, run_dir / "last.safetensors")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        metrics = load_json(run_dir / "metrics.json")
        history, best = metrics["history"], metrics.get("best")
        start_epoch = int(state["epoch"]) + 1
        log.info("resuming %s at epoch %d", run_dir, start_epoch + 1)

    tensorboard = open_tensorboard(run_dir)
    collate_fn = partial(collate, max_chars=data.prepared.cfg.max_word_chars)
    if cfg.teachers:
        train_set, collate_fn = with_teachers(cfg, train_set)
    select = cfg.eval.select_metric
    epochs = cfg.optim.epochs if trainable else min(cfg.optim.epochs, 1)
    for epoch in range(start_epoch, max(epochs, 1)):
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg.run.seed, epoch))
        order = torch.randperm(
            len(train_set), generator=torch.Generator().manual_seed(epoch_seed(cfg.run.seed, epoch))
        )
        loader = DataLoader(
            train_set,
            batch_size=cfg.optim.batch_size,
            sampler=order.tolist(),
            num_workers=cfg.run.num_workers,
            collate_fn=collate_fn,
        )
        losses: dict[str, float] = {}
        n_batches = 0
        if trainable and epoch < cfg.optim.epochs:
            model.train()
            bar = tqdm(
                loader,
                desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                disable=not cfg.run.progress,
                leave=False,
            )
            for step, batch in enumerate(bar):
                batch = to_device(batch, device)
                with autocast(device, dtype):
                    outputs = model(batch)
                loss, parts = model.loss(outputs, batch)
                if not torch.isfinite(loss):
                    raise EmtmError(
                        f"loss is {loss.item()} at epoch {epoch + 1}, batch {step} (global step "
                        f"{epoch * steps_per_epoch + step}); the last good checkpoint is kept in {run_dir}. "
                        "Try a lower --lr or --set run.amp=off."
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                n_batches += 1
                for k, v in {"loss": loss.item(), **parts}.items():
                    losses[k] = losses.get(k, 0.0) + v
                bar.set_postfix(loss=f"{losses['loss'] / n_batches:.3f}")
        val = evaluate(model, val_set, cfg.eval, device, 2 * cfg.optim.batch_size)
        row = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            **{f"train_{k}": v / max(n_batches, 1) for k, v in losses.items()},
            **{f"val_{k}": v for k, v in val.items() if k != "protocol"},
            "seconds": round(time.perf_counter() - started, 2),
        }
        history.append(row)
        if is_better(val, best, select):
            best = {"epoch": epoch + 1, **val}
            save_weights(model, run_dir / "model.safetensors")
        save_weights(model, run_dir / "last.safetensors")
        save_train_state(
            run_dir,
            {
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
            },
        )
        write_metrics(run_dir, history, best, model)
        if tensorboard is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    tensorboard.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
            tensorboard.flush()
        log.info(
            "epoch %d: loss %.4f val %s %.2f miou %.2f",
            epoch + 1,
            row.get("train_loss", float("nan")),
            select,
            val[select],
            val["miou"],
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    load_weights(model, run_dir / "model.safetensors")
    return {"best": best, "history": history, "n_trainable": model.n_trainable, "run_dir": str(run_dir)}


def with_teachers(cfg: TrainConfig, train_set: GroundingDataset):
    """Wrap the training set so each batch carries the cached teachers' distributions."""
    from emtm.distill.cache import TeacherCache, check_compatible
    from emtm.distill.data import TeacherDataset, collate_with_teachers

    caches = [TeacherCache(path) for path in cfg.teachers]
    for cache in caches:
        check_compatible(cache, cfg.data, "train")
    collate_fn = partial(collate_with_teachers, max_chars=train_set.cfg.max_word_chars)
    return TeacherDataset(train_set, caches), collate_fn


def open_tensorboard(run_dir: Path):
    """A TensorBoard writer in run_dir/tensorboard when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def split_summary(data: RunData) -> dict[str, Any]:
    out = {}
    for name, split in data.prepared.splits.items():
        out[name] = {
            "source": split.source,
            "n_queries": len(split.samples),
            "n_missing_videos": split.n_missing_videos,
        }
        if split.report is not None and name != "val":
            report = split.report
            out[name].update(n_read=report.n_read, n_clipped=report.n_clipped, n_dropped=report.n_dropped)
    return out


def write_metrics(run_dir: Path, history: list[dict[str, Any]], best: dict[str, Any] | None, model) -> None:
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
