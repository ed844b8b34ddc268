"""The training loop shared by every model: AdamW, warm-up + linear decay, clipping, AMP, validation,
best/last checkpoints, CSV log and a curve plot.

Crash safety (docs/RELIABILITY.md): the whole resumable state (weights, optimizer, scheduler, scaler, RNG
states, data position, history) is one atomically written `last_state.pt`, saved at each epoch end, every
`run.checkpoint_every` steps and on SIGINT/SIGTERM. `resume=True` continues from it, mid-epoch included,
and ends with the same weights as an uninterrupted run (CPU). A NaN/Inf loss stops before it can reach a
checkpoint. Under torchrun the same loop runs DistributedDataParallel (emtm.engine.distributed).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emtm.config import TrainConfig
from emtm.data.dataset import collate
from emtm.device import num_threads, resolve_device
from emtm.engine import distributed
from emtm.engine.checkpoint import (
    load_train_state,
    load_weights,
    resolved_options,
    rng_state,
    save_train_state,
    save_weights,
    set_rng_state,
    weight_names,
    write_run_config,
)
from emtm.engine.evaluate import evaluate, to_device
from emtm.engine.optim import amp_dtype, autocast, param_groups, warmup_linear
from emtm.engine.run_data import (
    build_run_data,
    split_summary,
    with_fitted_weights,
    with_teachers,
    with_teachers_holdout,
)
from emtm.engine.run_files import check_run_dir, open_tensorboard, write_metrics
from emtm.engine.signals import StopRequest, TrainingStopped, ignore_stop_signals
from emtm.errors import EmtmError
from emtm.io import read_json
from emtm.models.registry import build_model, model_config

log = logging.getLogger("emtm.train")


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def is_better(new: dict[str, Any], best: dict[str, Any] | None, key: str) -> bool:
    if best is None:
        return True
    return (new[key], new["miou"]) > (best[key], best["miou"])


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.data` into `run_dir`; returns the metrics summary.

    A new run never replaces trained work in `run_dir` unless `overwrite` (`check_run_dir`).
    `on_epoch_end(epoch, row)` is called after each epoch's checkpoint is safely written. Under torchrun
    (WORLD_SIZE > 1) this trains with DistributedDataParallel; every rank returns the same summary.
    SIGINT/SIGTERM save a checkpoint and raise `TrainingStopped`.
    """
    if distributed.is_main_process():
        check_run_dir(Path(run_dir), resume, overwrite)
    cfg = with_teachers_holdout(cfg)
    with num_threads(cfg.run.threads):  # restored afterwards
        ctx = distributed.setup(resolve_device(cfg.run.device), cfg.run.dist_timeout_s)
        try:
            summary = Trainer(cfg, Path(run_dir), ctx, resume).run(on_epoch_end)
            # Rank 0 still writes metrics and reloads the best weights here; a rank that tears the gloo
            # group down while a peer is busy can abort (SIGABRT) at exit, so all ranks leave together.
            ctx.barrier()
            return summary
        finally:
            ctx.close()


@dataclass
class Position:
    """Where training stands: the epoch in progress, its trained batches and this rank's running sums."""

    epoch: int = 0
    batch: int = 0
    global_step: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    n_batches: int = 0


def plain(obj: Any) -> Any:
    """JSON-plain copy (numpy scalars -> floats), so torch.load(weights_only=True) can read it back."""
    return json.loads(json.dumps(obj))


def run_options(cfg: TrainConfig, run_dir: Path, state: dict[str, Any] | None) -> dict[str, Any]:
    """Every model option, resolved, so that config.json records the model in full and a later change
    of a default cannot change what a run means. A resumed run keeps the options it was started with
    (its config.json, settled against the weights in its checkpoint), whatever the command line says."""
    asked = resolved_options(cfg.model, cfg.model_options)
    stored = run_dir / "config.json"
    if state is None or not stored.exists():
        return asked
    options = json.loads(stored.read_text(encoding="utf-8"))["train"]["model_options"]
    keys = list(state["model"]) if "model" in state else weight_names(run_dir / "last.safetensors")
    resolved = resolved_options(cfg.model, options, keys)
    if resolved != asked:
        log.info("resuming %s with the model options it was started with: %s", run_dir, resolved)
    return resolved


class Trainer:
    """One training run: the model, its optimizer state and data position, checkpointed as one file."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, ctx: distributed.Dist, resume: bool):
        state = load_train_state(run_dir) if resume else None
        cfg = with_fitted_weights(cfg.model_copy(update={"model_options": run_options(cfg, run_dir, state)}))
        self.cfg, self.run_dir, self.ctx, self.device = cfg, run_dir, ctx, ctx.device
        self.main = ctx.is_main
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.run.seed)
        self.data = data = build_run_data(cfg, run_dir, resume, progress=cfg.run.progress and self.main)
        model = build_model(
            cfg.model, model_config(cfg.model, cfg.model_options), data.spec.to_spec(data.word_vectors)
        )
        model.fit_prior(data.datasets["train"].samples)
        # On resume the checkpoint's own statistics replace these.
        model.fit_inputs(data.datasets["train"], progress=cfg.run.progress and self.main)
        self.model = model.to(self.device)
        if not resume and self.main:
            write_run_config(run_dir, cfg, data.spec, {"splits": split_summary(data)})
            data.vocab.save(run_dir / "vocab.json")
        ctx.barrier()

        self.per_rank_batch = distributed.per_rank_batch(cfg.optim.batch_size, ctx.world_size)
        self.steps_per_epoch = math.ceil(len(data.datasets["train"]) / cfg.optim.batch_size)
        total_steps = self.steps_per_epoch * cfg.optim.epochs
        self.trainable = model.n_trainable > 0
        self.optimizer = torch.optim.AdamW(
            param_groups(model, cfg.optim.weight_decay)
            if self.trainable
            else [torch.nn.Parameter(torch.zeros(1))],
            lr=cfg.optim.lr,
            betas=cfg.optim.betas,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            warmup_linear(total_steps, round(cfg.optim.warmup_epochs * self.steps_per_epoch)),
        )
        self.dtype = amp_dtype(self.device, cfg.run.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.pos = Position()
        self.resume_rng: dict[str, Any] | None = None
        self.saved = "none yet"
        if state is not None:
            self.restore(state)
        self.net = ctx.wrap(model) if self.trainable else model

    # ------------------------------------------------------------------------------------- state
    def restore(self, state: dict[str, Any]) -> None:
        path = self.run_dir / "last_state.pt"
        if "model" in state:
            try:
                self.model.load_state_dict(state["model"])
            except RuntimeError as err:
                reason = str(err).strip().splitlines()[0]
                raise EmtmError(f"{path}: does not fit the model in config.json ({reason})") from None
        else:  # a state written before checkpoints carried the weights
            load_weights(self.model, self.run_dir / "last.safetensors")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if "history" in state:
            self.history, self.best = state["history"], state["best"]
        else:
            metrics = read_json(self.run_dir / "metrics.json")
            self.history, self.best = metrics["history"], metrics.get("best")
        epoch = int(state["epoch"])
        if state.get("finished", True):
            self.pos = Position(epoch + 1, 0, (epoch + 1) * self.steps_per_epoch)
        else:
            losses = state["losses"] if self.main else dict.fromkeys(state["losses"], 0.0)
            self.pos = Position(
                epoch, int(state["batch"]), int(state["global_step"]), losses, state["n_batches"]
            )
            rngs = state["rng"]
            if len(rngs) == self.ctx.world_size:
                self.resume_rng = rngs[self.ctx.rank]
            else:
                log.warning(
                    "%s was written by %d process(es), this run has %d: the data position is restored, "
                    "the random streams are reseeded (not bit-identical to an uninterrupted run)",
                    path,
                    len(rngs),
                    self.ctx.world_size,
                )
                self.resume_rng = {}
        self.saved = self.describe(self.pos, not state.get("finished", True))
        if self.main:
            log.info("resuming %s at epoch %d, batch %d", self.run_dir, self.pos.epoch + 1, self.pos.batch)

    def describe(self, pos: Position, mid_epoch: bool) -> str:
        where = f"epoch {pos.epoch + 1}, batch {pos.batch}" if mid_epoch else f"end of epoch {pos.epoch}"
        return f"{self.run_dir / 'last_state.pt'} ({where})"

    def checkpoint(self, finished: bool) -> None:
        """Every rank calls this at the same step; rank 0 writes one file atomically, the others wait."""
        rngs = self.ctx.gather(rng_state(self.device))
        losses = self.ctx.sum_values(self.pos.losses)
        if self.main:
            state = {
                "version": 2,
                "epoch": self.pos.epoch,
                "batch": self.pos.batch,
                "finished": finished,
                "global_step": self.pos.global_step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rngs,
                "losses": losses,
                "n_batches": self.pos.n_batches,
                "history": plain(self.history),
                "best": plain(self.best),
                "world_size": self.ctx.world_size,
            }
            save_train_state(self.run_dir, state)
        self.ctx.barrier()
        done = Position(self.pos.epoch + 1) if finished else self.pos
        self.saved = self.describe(done, not finished)

    # ------------------------------------------------------------------------------------- loop
    def run(self, on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> dict[str, Any]:
        cfg, data = self.cfg, self.data
        self.train_set = data.datasets["train"]
        self.collate_fn = partial(collate, max_chars=data.prepared.cfg.max_word_chars)
        if cfg.teachers:
            self.train_set, self.collate_fn = with_teachers(cfg, self.train_set)
        tensorboard = open_tensorboard(self.run_dir) if self.main else None
        epochs = cfg.optim.epochs if self.trainable else min(cfg.optim.epochs, 1)
        first_epoch = self.pos.epoch
        with StopRequest() as stop:
            for epoch in range(first_epoch, max(epochs, 1)):
                started = time.perf_counter()
                if self.trainable and epoch < cfg.optim.epochs:
                    self.train_epoch(epoch, stop)
                row = self.end_epoch(epoch, started, tensorboard)
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, row)
                if self.ctx.any(stop.requested)[0]:
                    raise self.stopped(stop)
        if self.main:
            if first_epoch >= max(epochs, 1) and self.history:  # killed after its last checkpoint
                write_metrics(self.run_dir, self.history, self.best, self.model)
            load_weights(self.model, self.run_dir / "model.safetensors")
        return {
            "best": self.best,
            "history": self.history,
            "n_trainable": self.model.n_trainable,
            "run_dir": str(self.run_dir),
        }

    def epoch_loader(self, epoch: int) -> DataLoader:
        """This rank's batches of the epoch's seeded permutation, from the restored position on."""
        ctx = self.ctx
        order = torch.randperm(
            len(self.train_set), generator=torch.Generator().manual_seed(epoch_seed(self.cfg.run.seed, epoch))
        ).tolist()
        indices = distributed.shard(order, ctx.rank, ctx.world_size)
        return DataLoader(
            self.train_set,
            batch_size=self.per_rank_batch,
            sampler=indices[self.pos.batch * self.per_rank_batch :],
            num_workers=self.cfg.run.num_workers,
            collate_fn=self.collate_fn,
            worker_init_fn=ignore_stop_signals if self.cfg.run.num_workers else None,
        )

    def train_epoch(self, epoch: int, stop: StopRequest) -> None:
        cfg, pos, ctx = self.cfg, self.pos, self.ctx
        torch.manual_seed(epoch_seed(cfg.run.seed, epoch) * ctx.world_size + ctx.rank)
        # Earlier versions gave tqdm.auto the loader, which builds a spare iterator (one seed draw, and a
        # spare set of workers). Drawing once here keeps their random stream, so results reproduce.
        torch.empty((), dtype=torch.int64).random_()
        batches = iter(self.epoch_loader(epoch))  # draws the workers' seed from the epoch's RNG
        if self.resume_rng is not None:  # mid-epoch resume: continue the random streams exactly
            if self.resume_rng:
                set_rng_state(self.resume_rng, self.device)
            else:
                torch.manual_seed(epoch_seed(cfg.run.seed, epoch) * 7919 + pos.batch + ctx.rank)
            self.resume_rng = None
        self.model.train()
        bar = tqdm(
            batches,
            total=self.steps_per_epoch,
            initial=pos.batch,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not (cfg.run.progress and self.main),
            leave=False,
        )
        every = cfg.run.checkpoint_every
        for batch in bar:
            batch = to_device(batch, self.device)
            with autocast(self.device, self.dtype):
                outputs = self.net(batch)
            loss, parts = self.model.loss(outputs, batch)
            finite = bool(torch.isfinite(loss))
            bad, stopping = ctx.any(not finite, stop.requested)
            if bad:
                raise self.nonfinite(loss if not finite else None, batch, epoch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
            if not self.scaler.is_enabled() and not torch.isfinite(norm):
                raise self.nonfinite(None, batch, epoch, what=f"gradient norm is {norm.item()}")
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            pos.batch += 1
            pos.global_step += 1
            pos.n_batches += 1
            for k, v in {"loss": loss.item(), **parts}.items():
                pos.losses[k] = pos.losses.get(k, 0.0) + v
            bar.set_postfix(loss=f"{pos.losses['loss'] / pos.n_batches:.3f}")
            periodic = every and pos.global_step % every == 0 and pos.batch < self.steps_per_epoch
            if stopping or periodic:
                self.checkpoint(finished=False)
            if stopping:
                raise self.stopped(stop)

    def end_epoch(self, epoch: int, started: float, tensorboard: Any) -> dict[str, Any]:
        """Validate (rank 0, the whole split), record, save weights and the checkpoint, log."""
        cfg, pos, ctx = self.cfg, self.pos, self.ctx
        losses = ctx.sum_values(pos.losses)
        val = None
        if self.main:
            val = evaluate(
                self.model, self.data.datasets["val"], cfg.eval, self.device, 2 * cfg.optim.batch_size
            )
        val = ctx.broadcast(val)
        row = {
            "epoch": epoch + 1,
            "lr": self.scheduler.get_last_lr()[0],
            **{f"train_{k}": v / max(pos.n_batches * ctx.world_size, 1) for k, v in losses.items()},
            **{f"val_{k}": v for k, v in val.items() if k != "protocol"},
            "seconds": round(time.perf_counter() - started, 2),
        }
        self.history.append(row)
        if is_better(val, self.best, cfg.eval.select_metric):
            self.best = {"epoch": epoch + 1, **val}
            if self.main:
                save_weights(self.model, self.run_dir / "model.safetensors")
        if self.main:
            save_weights(self.model, self.run_dir / "last.safetensors")
        self.checkpoint(finished=True)
        self.pos = Position(epoch + 1, 0, pos.global_step)
        if self.main:
            write_metrics(self.run_dir, self.history, self.best, self.model)
            if tensorboard is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, int | float):
                        tensorboard.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
                tensorboard.flush()
            select = cfg.eval.select_metric
            log.info(
                "epoch %d: loss %.4f val %s %.2f miou %.2f",
                epoch + 1,
                row.get("train_loss", float("nan")),
                select,
                val[select],
                val["miou"],
            )
        return row

    # ------------------------------------------------------------------------------------- stops
    def resume_hint(self) -> str:
        command = "distill" if self.cfg.teachers else "train"
        hint = f"emtm {command} --data {self.cfg.data} --out {self.run_dir} --resume"
        if self.ctx.active:
            hint += " (under the same torchrun command)"
        return hint

    def stopped(self, stop: StopRequest) -> TrainingStopped:
        signum = stop.signum or signal.SIGTERM  # another rank was signalled
        return TrainingStopped(
            f"stopped by {signal.Signals(signum).name}; checkpoint saved: {self.saved}. "
            f"Resume with: {self.resume_hint()}",
            signum,
            str(self.saved),
        )

    def nonfinite(
        self, loss: torch.Tensor | None, batch: dict[str, torch.Tensor], epoch: int, what: str = ""
    ) -> EmtmError:
        pos = self.pos
        ids = [self.train_set.samples[i].sample_id for i in batch["index"].tolist()]
        if not what:
            what = f"loss is {loss.item()}" if loss is not None else "loss is not finite on another rank"
        shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        return EmtmError(
            f"{what} at epoch {epoch + 1}, batch {pos.batch + 1} of {self.steps_per_epoch} (global step "
            f"{pos.global_step + 1}; this batch's samples: {shown}). Stopped without saving these "
            f"weights; the last good checkpoint is {self.saved}. Try a lower --lr or --set run.amp=off, "
            f"then start again or continue from that checkpoint with: {self.resume_hint()}"
        )
