"""Does the model read the sentence? Two measurements of query sensitivity.

* distinct top-1: of the videos with two or more queries, the share whose queries do not all get the
  same top-1 moment. A model that ranks moments by a query-independent "eventness" gives every query
  of a video the same answer.
* swapped query: each query whose video has another query with a different moment (ground-truth IoU
  < 0.5) is asked again with that other sentence, and scored against its own moment. A model that
  listens loses accuracy; one that does not keeps it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from emtm.config import EvalConfig
from emtm.data.dataset import GroundingDataset
from emtm.data.records import Sample
from emtm.engine.evaluate import SplitPredictions, ground_truth, predict_dataset
from emtm.engine.metrics import grounding_metrics, temporal_iou
from emtm.models.base import GroundingModel


def by_video(samples: list[Sample]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        groups[sample.video_id].append(i)
    return groups


def distinct_top1(preds: SplitPredictions) -> dict[str, float]:
    """`n_videos` with >= 2 queries, the share of them whose queries do not all get one top-1 window
    (`distinct_top1_share`, percent), and the share where every query gets its own (`all_distinct_share`)."""
    groups = [idx for idx in by_video(preds.samples).values() if len(idx) >= 2]
    n_not_same = n_all = 0
    for idx in groups:
        tops = {tuple(np.round(preds.windows[i][0], 6)) for i in idx}
        n_not_same += len(tops) > 1
        n_all += len(tops) == len(idx)
    n = len(groups)
    return {
        "n_videos": n,
        "distinct_top1_share": 100.0 * n_not_same / n if n else None,  # None: no video has 2 queries
        "all_distinct_share": 100.0 * n_all / n if n else None,
    }


def swap_partners(samples: list[Sample], max_iou: float = 0.5, seed: int = 0) -> dict[int, int]:
    """For each query, another query of its video whose first window overlaps its own by IoU < max_iou
    (chosen at random with `seed` among those); queries without one are left out."""
    rng = np.random.default_rng(seed)
    partners = {}
    for idx in by_video(samples).values():
        for i in idx:
            own = np.array([samples[i].start, samples[i].end])
            others = [
                j for j in idx
                if j != i and temporal_iou(own, np.array([samples[j].start, samples[j].end])) < max_iou
            ]  # fmt: skip
            if others:
                partners[i] = int(rng.choice(others))
    return partners


def swapped_accuracy(
    model: GroundingModel,
    dataset: GroundingDataset,
    preds: SplitPredictions,
    eval_cfg: EvalConfig,
    device: torch.device,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """R1@0.5 / R1@0.7 / mIoU of the swappable queries with their own sentence and with a swapped one,
    both scored against the query's own moment, and the drop (own - swapped, points)."""
    partners = swap_partners(preds.samples, seed=seed)
    if not partners:
        return {"n_swapped": 0}
    idx = sorted(partners)
    swapped = [replace(preds.samples[i], sentence=preds.samples[partners[i]].sentence) for i in idx]
    swapped_ds = GroundingDataset(swapped, dataset.store, dataset.vocab, dataset.cfg)
    swapped_preds = predict_dataset(model, swapped_ds, eval_cfg, device, batch_size)
    gts = ground_truth(preds.samples, preds.n_clips, eval_cfg.protocol)
    own = grounding_metrics([preds.windows[i] for i in idx], [gts[i] for i in idx])
    other = grounding_metrics(swapped_preds.windows, [gts[i] for i in idx])
    out: dict[str, Any] = {"n_swapped": len(idx)}
    for key in ("r1@0.5", "r1@0.7", "miou"):
        out[f"own_{key}"] = own[key]
        out[f"swapped_{key}"] = other[key]
        out[f"drop_{key}"] = own[key] - other[key]
    return out


def query_sensitivity(
    model: GroundingModel,
    dataset: GroundingDataset,
    preds: SplitPredictions,
    eval_cfg: EvalConfig,
    device: torch.device,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """`distinct_top1` of the predictions and `swapped_accuracy` of the model, in one dict."""
    return {
        **distinct_top1(preds),
        **swapped_accuracy(model, dataset, preds, eval_cfg, device, batch_size, seed),
    }
