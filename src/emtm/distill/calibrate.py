"""Per-teacher calibration: the temperature (span, 2D map) or Gaussian width (proposals, regression) that
makes a teacher's unified distributions fit held-out ground truth best.

One temperature or sigma for every teacher lets the sharpest one dominate any mixture. Here each
teacher's own value is chosen on queries it was not trained on: the one (from a log-spaced grid) whose
unified start/end distributions have the lowest hard loss, the soft-target cross-entropy against the
smoothed ground-truth boundaries that the KAU's ensemble is trained on (`ensemble_hard_loss_per_query`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from emtm.data.grid import time_to_index
from emtm.data.records import Sample
from emtm.distill.losses import ensemble_hard_loss_per_query
from emtm.distill.unify import unify

# The grids searched, in steps of 2^(1/3) around the uncalibrated defaults (T = 1, sigma = 5% of the
# video), which they hold exactly, so the fit is never worse than the default on the held-out queries:
# T from 0.25 to 8, sigma from 1% to 40% of the video.
TEMPERATURES = tuple(2.0 ** (k / 3) for k in range(-6, 10))
SIGMAS = tuple(0.05 * 2.0 ** (k / 3) for k in range(-7, 10))
DEFAULTS = {"temperature": 1.0, "sigma_frac": 0.05}


def parameter_of(form: str) -> str:
    """The unify option a teacher of this output form is calibrated by."""
    return "temperature" if form in ("span", "2dmap") else "sigma_frac"


@dataclass
class HeldOutChunk:
    """A batch of a teacher's native outputs on held-out queries, with the student grid and the truth."""

    native: dict[str, Tensor]
    src_mask: Tensor | None  # the teacher's own clip grid (span outputs), else None
    dst_mask: Tensor  # (B, L) the student grid
    start_index: Tensor  # (B,) ground-truth start clip on the student grid
    end_index: Tensor


def truth_indices(samples: Iterable[Sample], lengths: Iterable[int]) -> tuple[Tensor, Tensor]:
    """Ground-truth (start, end) clips of each sample on its grid of n clips (the student grid)."""
    pairs = [time_to_index(s.start, s.end, s.duration, int(n)) for s, n in zip(samples, lengths)]
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def held_out_loss(form: str, chunks: list[HeldOutChunk], options: dict) -> float:
    """Mean hard loss per query (start + end) of the teacher's distributions unified with `options`."""
    total, n = 0.0, 0
    for c in chunks:
        start, end = unify(form, c.native, c.dst_mask, src_mask=c.src_mask, **options)
        batch = {"video_mask": c.dst_mask, "start_index": c.start_index, "end_index": c.end_index}
        losses = ensemble_hard_loss_per_query(start, end, batch)
        total += float(losses.sum())
        n += len(losses)
    return total / max(n, 1)


@dataclass
class Calibration:
    parameter: str  # "temperature" or "sigma_frac"
    value: float  # the fitted value
    held_out_loss: float  # mean hard loss per query at the fitted value
    default_loss: float  # ... at the uncalibrated default (T = 1, sigma = 0.05)
    n_queries: int
    split: str  # where the held-out queries come from

    def to_dict(self) -> dict:
        return asdict(self)


def fit_calibration(
    form: str, chunks: list[HeldOutChunk], map_reduce: str = "sum", split: str = "val"
) -> Calibration:
    """Grid search of the teacher's calibration parameter on held-out chunks (module docstring)."""
    parameter = parameter_of(form)
    grid = TEMPERATURES if parameter == "temperature" else SIGMAS
    base = {**DEFAULTS, "map_reduce": map_reduce}
    with torch.inference_mode():
        losses = {v: held_out_loss(form, chunks, {**base, parameter: v}) for v in grid}
    best = min(grid, key=lambda v: (losses[v], abs(np.log(v / DEFAULTS[parameter]))))
    return Calibration(
        parameter=parameter,
        value=best,
        held_out_loss=losses[best],
        default_loss=losses[DEFAULTS[parameter]],
        n_queries=sum(len(c.start_index) for c in chunks),
        split=split,
    )
