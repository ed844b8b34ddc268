"""The paper's qualitative figure for one query (`emtm show`): ground truth, each teacher's unified
start/end distributions with its KAU weights, the ensemble, and the student's prediction, on one time axis.

`TeacherView` computes these numbers for any query of a split (`emtm serve` shows them on its page);
`show_query` draws one of them as a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emtm.data.dataset import split_dataset
from emtm.data.records import Sample
from emtm.distill.cache import TeacherCache
from emtm.distill.data import TeacherDataset, collate_with_teachers
from emtm.distill.kau import ensemble
from emtm.engine.checkpoint import LoadedRun, load_run
from emtm.errors import EmtmError
from emtm.io import atomic_path
from emtm.models.layers import masked_softmax


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
        self.data_yaml = data_yaml or run.cfg.data
        self.base = split_dataset(self.data_yaml, split, run.vocab, run.cfg.run.seed)
        self.caches = [TeacherCache(path) for path in teachers]
        for cache in self.caches:
            if cache.meta.split != split:
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
    def explain(self, index: int) -> QueryView:
        """The teachers' distributions, the KAU weights, the ensemble and the student for query `index`."""
        k = len(self.caches)
        batch = collate_with_teachers([self.dataset[index]], self.run.spec.max_word_chars)
        model = self.run.model.eval()
        enc = model.encoder(batch)
        out_student = model.head(enc.video, enc.query, enc.video_mask, enc.query_mask)
        teacher_dists = batch["teacher_dists"]
        if hasattr(model, "kau"):
            weights = model.kau(enc.video, enc.query, enc.video_mask, enc.query_mask)[:, :k]
        else:
            weights = torch.full((1, k, 2), 1.0 / k)
        if weights.dim() == 4:  # per-clip weights: show their mean over the clips
            weights = weights.mean(1)
        ens_start, ens_end = ensemble(teacher_dists, weights / weights.sum(1, keepdim=True), enc.video_mask)
        mask = batch["video_mask"]
        student_start = masked_softmax(out_student["start_logits"], mask)[0].numpy()
        student_end = masked_softmax(out_student["end_logits"], mask)[0].numpy()
        pred = model.predict(out_student, batch, top_k=1)
        sample = self.base.samples[index]
        return QueryView(
            sample=sample,
            teachers=[c.meta.teacher for c in self.caches],
            teacher_dists=teacher_dists[0].numpy(),
            weights=weights[0].numpy(),
            ensemble=(ens_start[0].numpy(), ens_end[0].numpy()),
            student=(student_start, student_end),
            window=pred.windows[0, 0].numpy() * sample.duration,
        )


def show_query(
    run_dir: str | Path,
    sample_id: str,
    out: str | Path,
    data_yaml: str | None = None,
    split: str = "train",
    teachers: list[str] | None = None,
) -> Path:
    """Draw one query of `split` (see `TeacherView` for the caches)."""
    view = TeacherView(load_run(run_dir), data_yaml, split, teachers)
    q = view.explain(view.index_of(sample_id))
    return plot(Path(out), q.sample, q.teachers, q.teacher_dists, q.weights, q.ensemble, q.student, q.window)


def plot(out, sample, names, teacher_dists, weights, ens, student, window) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = teacher_dists.shape[-1]
    starts = np.arange(n) / n * sample.duration  # start boundaries of the clips
    ends = (np.arange(n) + 1) / n * sample.duration  # end boundaries
    rows = len(names) + 2
    fig, axes = plt.subplots(rows, 1, figsize=(9, 1.5 * rows + 0.8), sharex=True)
    fig.suptitle(f"{sample.sample_id}: “{sample.sentence}”", fontsize=10)

    def panel(ax, title, start, end):
        ax.axvspan(sample.start, sample.end, color="0.85", label="ground truth")
        ax.plot(starts, start, color="tab:green", label="start")
        ax.plot(ends, end, color="tab:red", linestyle="--", label="end")
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_yticks([])

    for k, name in enumerate(names):
        panel(axes[k], f"{name}\nw_s={weights[k, 0]:.2f} w_e={weights[k, 1]:.2f}", *teacher_dists[k])
    panel(axes[-2], "KAU ensemble", *ens)
    panel(axes[-1], "student", *student)
    axes[-1].axvspan(window[0], window[1], ymin=0.0, ymax=0.12, color="tab:blue", label="student prediction")
    axes[0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1].legend(fontsize=7, loc="upper right", ncol=4)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, sample.duration)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
