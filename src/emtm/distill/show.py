"""The paper's qualitative figure for one query (`emtm show`): ground truth, each teacher's unified
start/end distributions with its KAU weights, the ensemble, and the student's prediction, on one time axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from emtm.data.dataset import split_dataset
from emtm.distill.cache import TeacherCache
from emtm.distill.data import TeacherDataset, collate_with_teachers
from emtm.distill.kau import ensemble
from emtm.engine.checkpoint import load_run
from emtm.errors import EmtmError
from emtm.io import atomic_path
from emtm.models.layers import masked_softmax


@torch.no_grad()
def show_query(
    run_dir: str | Path,
    sample_id: str,
    out: str | Path,
    data_yaml: str | None = None,
    split: str = "train",
    teachers: list[str] | None = None,
) -> Path:
    """Draw one query of `split`. The teacher caches default to the run's own (built on train); for
    another split pass caches exported on it (`emtm teachers export --split test`), in the same order."""
    run = load_run(run_dir)
    if run.cfg.model != "emtm" or not run.cfg.teachers:
        raise EmtmError(
            f"{run_dir}: `emtm show` needs a run written by `emtm distill` (this one is {run.cfg.model})"
        )
    teachers = teachers or run.cfg.teachers
    if len(teachers) != len(run.cfg.teachers):
        raise EmtmError(
            f"{run_dir} was distilled from {len(run.cfg.teachers)} teacher(s); got {len(teachers)} cache(s)"
        )
    data_yaml = data_yaml or run.cfg.data
    base = split_dataset(data_yaml, split, run.vocab, run.cfg.run.seed)
    index = next((i for i, s in enumerate(base.samples) if s.sample_id == sample_id), None)
    if index is None:
        raise EmtmError(f"sample {sample_id!r} is not in the {split} queries of {data_yaml}")
    caches = [TeacherCache(path) for path in teachers]
    for cache in caches:
        if cache.meta.split != split:
            raise EmtmError(
                f"{cache.path}: built for split {cache.meta.split!r}, not {split!r}; export the teacher "
                f"on it: emtm teachers export --run RUN --split {split} --out FILE"
            )
    batch = collate_with_teachers([TeacherDataset(base, caches)[index]], run.spec.max_word_chars)
    model = run.model.eval()
    enc = model.encoder(batch)
    out_student = model.head(enc.video, enc.query, enc.video_mask, enc.query_mask)
    teacher_dists = batch["teacher_dists"]
    if hasattr(model, "kau"):
        weights = model.kau(enc.video, enc.query, enc.video_mask, enc.query_mask)[:, : len(caches)]
    else:
        weights = torch.full((1, len(caches), 2), 1.0 / len(caches))
    if weights.dim() == 4:  # per-clip weights: show their mean over the clips
        weights = weights.mean(1)
    ens_start, ens_end = ensemble(teacher_dists, weights / weights.sum(1, keepdim=True), enc.video_mask)
    mask = batch["video_mask"]
    student_start = masked_softmax(out_student["start_logits"], mask)[0].numpy()
    student_end = masked_softmax(out_student["end_logits"], mask)[0].numpy()
    pred = model.predict(out_student, batch, top_k=1)
    sample = base.samples[index]
    window = pred.windows[0, 0].numpy() * sample.duration
    return plot(
        Path(out), sample, [c.meta.teacher for c in caches], teacher_dists[0].numpy(), weights[0].numpy(),
        (ens_start[0].numpy(), ens_end[0].numpy()), (student_start, student_end), window,
    )  # fmt: skip


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
