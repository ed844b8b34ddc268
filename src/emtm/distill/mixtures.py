"""How good a mixture of cached teachers is on held-out queries, and the best global weights.

A mixture's quality is its hard loss: the soft-target cross-entropy of its start and end distributions
against the smoothed ground truth, the loss the KAU is trained on. `fit_global_weights` finds the one
weight per teacher and boundary (the same for every query) with the lowest mean hard loss: the
`fixed-best` control of the ablation, the bar a per-sample KAU has to clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from emtm.config import load_data_config
from emtm.data.dataset import prepare
from emtm.distill.cache import TeacherCache
from emtm.distill.calibrate import truth_indices
from emtm.distill.kau import ensemble
from emtm.distill.losses import ensemble_hard_loss_per_query


@dataclass
class HeldOutDists:
    """Cached teacher distributions of held-out queries, padded: dists (N, K, 2, L), mask (N, L)."""

    sample_ids: list[str]
    dists: Tensor
    mask: Tensor
    start_index: Tensor
    end_index: Tensor

    @property
    def batch(self) -> dict[str, Tensor]:
        return {"video_mask": self.mask, "start_index": self.start_index, "end_index": self.end_index}


def validation_dists(
    data_yaml: str | Path, teachers: list[str], seed: int = 0, fold: tuple[int, int] | None = None
) -> HeldOutDists:
    """The teachers' cached distributions on the validation queries of `seed` (the data.yaml's val split,
    or the train queries of the videos that seed holds out), read from the train-split caches."""
    cfg = load_data_config(data_yaml)
    samples = prepare(cfg, seed, ("train", "val"), fold).splits["val"].samples
    caches = [TeacherCache(t) for t in teachers]
    rows = [[cache.get(s.sample_id) for cache in caches] for s in samples]
    lengths = [row[0].shape[1] for row in rows]
    dists = torch.zeros(len(samples), len(caches), 2, max(lengths))
    for i, row in enumerate(rows):
        for k, dist in enumerate(row):
            dists[i, k, :, : dist.shape[1]] = torch.from_numpy(dist)
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    start, end = truth_indices(samples, lengths)
    return HeldOutDists([s.sample_id for s in samples], dists, mask, start, end)


def mixture_loss(held: HeldOutDists, weights: Tensor) -> Tensor:
    """(N,) hard loss per query of the mixture with `weights`, (K, 2) global or (N, K, 2) per query."""
    w = weights.expand(len(held.dists), *weights.shape[-2:]) if weights.dim() == 2 else weights
    return ensemble_hard_loss_per_query(*ensemble(held.dists, w, held.mask), held.batch)


def fit_global_weights(held: HeldOutDists, steps: int = 300, lr: float = 0.05) -> Tensor:
    """(K, 2): softmax-parametrised global weights minimising the mean hard loss (Adam, from the mean)."""
    k = held.dists.shape[1]
    logits = torch.zeros(k, 2, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = mixture_loss(held, torch.softmax(logits, 0)).mean()
        loss.backward()
        opt.step()
    return torch.softmax(logits.detach(), 0)
