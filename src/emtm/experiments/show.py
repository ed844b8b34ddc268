"""The paper's qualitative figure for one query (`emtm show`): ground truth, each teacher's unified
start/end distributions with its KAU weights, the ensemble, and the student's prediction, on one time axis.

`TeacherView` computes these numbers for any query of a split (`emtm serve` shows them on its page);
`show_query` draws one of them as a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from emtm.data.dataset import split_dataset
from emtm.data.records import Sample
from emtm.distill.cache import TeacherCache
from emtm.distill.data import TeacherDataset, collate_with_teachers
from emtm.distill.kau import ensemble
from emtm.distill.losses import ensemble_hard_loss_per_query
from emtm.distill.mixtures import HeldOutDists, fit_global_weights, mixture_loss
from emtm.distill.model import teacher_losses
from emtm.engine.checkpoint import LoadedRun, load_run
from emtm.engine.evaluate import to_device
from emtm.errors import EmtmError
from emtm.io import atomic_path, write_json
from emtm.models.layers import masked_softmax
from emtm.stats import paired_difference


@dataclass
class QueryView:
    """One query seen through a distilled run: every array is over the query's n clips."""

    sample: Sample
    teachers: list[str]  # the caches' teacher names, in the run's order
    teacher_dists: np.ndarray  # (K, 2, n): each teacher's unified start (row 0) and end (row 1)
    weights: np.ndarray  # (K, 2): the KAU start and end weight per teacher (mean over clips if per clip)
    ensemble: tuple[np.ndarray, np.ndarray]  # the KAU-weighted mixture's start and end
    student: tuple[np.ndarray, np.ndarray]  # the student's start and end (softmax over the clips)
    window: np.ndarray  # the student's top-1 moment, seconds


class TeacherView:
    """A run written by `emtm distill` with its teacher caches on one split; `explain(i)` gives query i.

    The caches default to the run's own (built on train); for another split pass caches exported on it
    (`emtm teachers export --split test`), in the same order.
    """

    def __init__(
        self,
        run: LoadedRun,
        data_yaml: str | None = None,
        split: str = "train",
        teachers: list[str] | None = None,
    ):
        if run.cfg.model != "emtm" or not run.cfg.teachers:
            raise EmtmError(
                f"{run.run_dir}: teachers and KAU weights need a run written by `emtm distill` "
                f"(this one is {run.cfg.model})"
            )
        teachers = teachers or run.cfg.teachers
        if len(teachers) != len(run.cfg.teachers):
            raise EmtmError(
                f"{run.run_dir} was distilled from {len(run.cfg.teachers)} teacher(s); got {len(teachers)} "
                "cache(s)"
            )
        self.run, self.split = run, split
        self.device = next(run.model.parameters()).device  # the run's; batches are moved there
        self.data_yaml = data_yaml or run.cfg.data
        self.base = split_dataset(self.data_yaml, split, run.vocab, run.cfg.holdout_seed)
        self.caches = [TeacherCache(path) for path in teachers]
        for cache in self.caches:
            if cache.meta.split != split and not (split == "val" and cache.meta.split == "train"):
                raise EmtmError(
                    f"{cache.path}: built for split {cache.meta.split!r}, not {split!r}; export the teacher "
                    f"on it: emtm teachers export --run RUN --split {split} --out FILE"
                )
        self.dataset = TeacherDataset(self.base, self.caches)

    def __len__(self) -> int:
        return len(self.base.samples)

    @property
    def samples(self) -> list[Sample]:
        return self.base.samples

    def index_of(self, sample_id: str) -> int:
        index = next((i for i, s in enumerate(self.base.samples) if s.sample_id == sample_id), None)
        if index is None:
            raise EmtmError(f"sample {sample_id!r} is not in the {self.split} queries of {self.data_yaml}")
        return index

    @torch.no_grad()
    def weigh(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """For a batch of collate_with_teachers on self.device: the student's outputs, the KAU's (B, K, 2)
        weights (per-clip weights averaged over each query's valid clips) and the (B, K, 2, L) teacher
        distributions it weighs: the cached teachers', then the live isomorphic teacher's when the run
        has it in the KAU (iso_in_kau), computed here in eval mode."""
        model = self.run.model.eval()
        enc = model.encoder(batch)
        student = model.head(enc.video, enc.query, enc.video_mask, enc.query_mask)
        dists = model.teacher_distributions(batch)
        if not hasattr(model, "kau"):  # the run's fixed weights, or the plain mean
            return student, model.global_weights(dists), dists
        weights = model.weigh(enc, dists)
        if weights.dim() == 4:  # (B, L, K, 2) per clip
            keep = enc.video_mask[:, :, None, None].to(weights.dtype)
            weights = (weights * keep).sum(1) / keep.sum(1)
        return student, weights, dists

    def batches(self, batch_size: int = 64) -> DataLoader:
        """The split's queries in order, batched and padded as for distillation."""
        collate = partial(collate_with_teachers, max_chars=self.run.spec.max_word_chars)
        return DataLoader(self.dataset, batch_size=batch_size, collate_fn=collate)

    def explain(self, index: int) -> QueryView:
        """The teachers' distributions, the KAU weights, the ensemble and the student for query `index`."""
        batch = collate_with_teachers([self.dataset[index]], self.run.spec.max_word_chars)
        batch = to_device(batch, self.device)
        out_student, weights, teacher_dists = self.weigh(batch)
        mask = batch["video_mask"]
        ens_start, ens_end = ensemble(teacher_dists, weights, mask)
        student_start = masked_softmax(out_student["start_logits"], mask)[0]
        student_end = masked_softmax(out_student["end_logits"], mask)[0]
        pred = self.run.model.predict(out_student, batch, top_k=1)
        sample = self.base.samples[index]

        def host(x: Tensor) -> np.ndarray:
            return x.float().cpu().numpy()

        return QueryView(
            sample=sample,
            teachers=self.names,
            teacher_dists=host(teacher_dists[0]),
            weights=host(weights[0]),
            ensemble=(host(ens_start[0]), host(ens_end[0])),
            student=(host(student_start), host(student_end)),
            window=host(pred.windows[0, 0]) * sample.duration,
        )

    @property
    def aggregator(self) -> str:
        """What weighs the teachers in this run: "KAU", "fixed" (global weights) or "plain mean"."""
        model = self.run.model
        if hasattr(model, "kau"):
            return "KAU"
        return "plain mean" if model.config.fixed_weights is None else "fixed"

    @property
    def names(self) -> list[str]:
        """The teachers the KAU weighs, in its order: the caches', then the live isomorphic teacher's."""
        config = self.run.model.config
        live = ["isomorphic (live)"] if config.iso_in_kau and config.isomorphic else []
        return [c.meta.teacher for c in self.caches] + live

    @torch.no_grad()
    def summary(self, batch_size: int = 64) -> dict[str, Any]:
        """How the KAU weighs the teachers over the whole split, against a per-query oracle.

        Per teacher: its mean start and end weight, the spread of its weight over queries, how often the
        KAU gives it the most weight and how often it is the oracle's pick (the teacher whose own start
        or end distribution has the lowest cross-entropy against the smoothed ground truth, the
        ensemble hard loss's target), and that cross-entropy alone. Then the ensemble hard loss of the
        KAU's mixture, of the plain mean and of the oracle's per-query pick; lower is better."""
        own = f"{self.aggregator} weights"  # the run's own mixture: "KAU weights", "fixed weights", ...
        weights, losses, ens, held = [], [], {own: [], "plain mean": []}, []
        for batch in self.batches(batch_size):
            batch = to_device(batch, self.device)
            _, w, dists = self.weigh(batch)
            mask = batch["video_mask"]
            k = dists.shape[1]
            losses.append(teacher_losses(dists, batch))  # (B, K, 2)
            weights.append(w)
            held.append(
                HeldOutDists(
                    [], dists.cpu(), mask.cpu(), batch["start_index"].cpu(), batch["end_index"].cpu()
                )
            )
            for name, mix in ((own, w), ("plain mean", torch.full_like(w, 1.0 / k))):
                ens[name].append(ensemble_hard_loss_per_query(*ensemble(dists, mix, mask), batch))
        w, ce = torch.cat(weights).cpu(), torch.cat(losses).cpu()  # (N, K, 2) each
        per_query = {name: torch.cat(values).cpu() for name, values in ens.items()}
        per_query["best single teacher"] = ce.sum(-1)[:, ce.sum(-1).mean(0).argmin()]
        per_query["fixed best weights (2-fold)"] = cross_fitted_global(held)
        per_query["oracle pick"] = ce.min(1).values.sum(-1)
        top, best = w.argmax(1), ce.argmin(1)  # (N, 2): per query and boundary
        teachers = [
            {
                "teacher": name,
                "weight_start": w[:, t, 0].mean().item(),
                "weight_end": w[:, t, 1].mean().item(),
                "weight_std": w[:, t].std(0).mean().item() if len(w) > 1 else 0.0,
                "kau_top_share": (top == t).float().mean().item(),
                "oracle_share": (best == t).float().mean().item(),
                "hard_loss": ce[:, t].sum(-1).mean().item(),
            }
            for t, name in enumerate(self.names)
        ]
        loss = {name: values.mean().item() for name, values in per_query.items()}
        kau = per_query[own].numpy()
        versus = {
            name: paired_difference(kau, values.numpy())
            for name, values in per_query.items()
            if name not in (own, "oracle pick")
        }
        return {
            "run": str(self.run.run_dir),
            "split": self.split,
            "aggregator": self.aggregator,
            "n_queries": len(w),
            "teachers": teachers,
            "ensemble_hard_loss": loss,
            "kau_minus": versus,  # per-query paired differences of the KAU's hard loss (negative: better)
            "kau_agrees_with_oracle": (top == best).float().mean().item(),
        }


def cross_fitted_global(chunks: list[HeldOutDists]) -> Tensor:
    """(N,) hard loss per query of global teacher weights fitted on the other half of the queries
    (even and odd positions, two folds): fixed-best weights, scored out of sample."""
    n_clips = max(c.mask.shape[1] for c in chunks)

    def pad(x: Tensor) -> Tensor:
        return torch.nn.functional.pad(x, (0, n_clips - x.shape[-1]))

    dists = torch.cat([pad(c.dists) for c in chunks])
    mask = torch.cat([pad(c.mask) for c in chunks])
    start = torch.cat([c.start_index for c in chunks])
    end = torch.cat([c.end_index for c in chunks])
    out = torch.empty(len(dists))
    for fold in (0, 1):
        fit = torch.arange(len(dists)) % 2 != fold

        def part(sel: Tensor) -> HeldOutDists:
            return HeldOutDists([], dists[sel], mask[sel], start[sel], end[sel])

        with torch.enable_grad():
            weights = fit_global_weights(part(fit))
        out[~fit] = mixture_loss(part(~fit), weights).detach()
    return out


def kau_summary(
    run_dir: Path, split: str = "val", device: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """TeacherView.summary of a distilled run on `split` (default its validation queries), computed on
    `device` and written to run_dir/kau.json; None for a run without cached teachers."""
    run = load_run(run_dir, device=device)
    if not run.cfg.teachers:
        return None
    summary = TeacherView(run, split=split).summary()
    write_json(Path(run_dir) / "kau.json", summary)
    return summary


def show_query(
    run_dir: str | Path,
    sample_id: str,
    out: str | Path,
    data_yaml: str | None = None,
    split: str = "train",
    teachers: list[str] | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Draw one query of `split` (see `TeacherView` for the caches)."""
    view = TeacherView(load_run(run_dir, device=device), data_yaml, split, teachers)
    q = view.explain(view.index_of(sample_id))
    return plot(Path(out), q)


def plot(out: Path, q: QueryView) -> Path:
    """The figure of one query: a panel per teacher (with its KAU weights), the ensemble, the student."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample, n = q.sample, q.teacher_dists.shape[-1]
    starts = np.arange(n) / n * sample.duration  # start boundaries of the clips
    ends = (np.arange(n) + 1) / n * sample.duration  # end boundaries
    rows = len(q.teachers) + 2
    fig, axes = plt.subplots(rows, 1, figsize=(9, 1.5 * rows + 0.8), sharex=True)
    fig.suptitle(f"{sample.sample_id}: “{sample.sentence}”", fontsize=10)

    def panel(ax: Any, title: str, start: np.ndarray, end: np.ndarray) -> None:
        ax.axvspan(sample.start, sample.end, color="0.85", label="ground truth")
        ax.plot(starts, start, color="tab:green", label="start")
        ax.plot(ends, end, color="tab:red", linestyle="--", label="end")
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_yticks([])

    for k, name in enumerate(q.teachers):
        panel(axes[k], f"{name}\nw_s={q.weights[k, 0]:.2f} w_e={q.weights[k, 1]:.2f}", *q.teacher_dists[k])
    panel(axes[-2], "KAU ensemble", *q.ensemble)
    panel(axes[-1], "student", *q.student)
    axes[-1].axvspan(
        q.window[0], q.window[1], ymin=0.0, ymax=0.12, color="tab:blue", label="student prediction"
    )
    axes[0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1].legend(fontsize=7, loc="upper right", ncol=4)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, sample.duration)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
