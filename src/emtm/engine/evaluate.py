"""The one evaluator: run a model over a split, rank windows, score them against the ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emtm.config import EvalConfig
from emtm.data.dataset import GroundingDataset, collate
from emtm.data.grid import index_to_time, time_to_index
from emtm.data.records import Sample
from emtm.engine.metrics import grounding_metrics, top1_ious
from emtm.engine.speed import model_dtype
from emtm.models.base import GroundingModel


@dataclass
class SplitPredictions:
    windows: list[np.ndarray]  # per query (k, 2) seconds, best first, each window once
    scores: list[np.ndarray]  # per query (k,); mAP ranks by them
    samples: list[Sample]
    n_clips: np.ndarray  # valid clips per query after resampling


# Lengths of the public Moment-DETR / Lighthouse evaluator's buckets: a ground-truth window of L seconds
# is in a bucket when lo < L <= hi (its "full" range is (0, 150]; emtm's overall metrics keep every window).
SECONDS_BUCKETS = {"short": (0.0, 10.0), "middle": (10.0, 30.0), "long": (30.0, 150.0)}
SECONDS_LABELS = {"short": "short (<= 10 s)", "middle": "middle (10-30 s)", "long": "long (30-150 s)"}
RELATIVE_LABELS = {"short": "short (< 1/3 video)", "medium": "medium (1/3-2/3)", "long": "long (> 2/3 video)"}


def to_device(
    batch: dict[str, torch.Tensor], device: torch.device, video_dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The batch on `device`; with `video_dtype`, its video features in that dtype (a model cast to
    fp16/bf16 reads them so; durations and other floats keep their dtype)."""
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if video_dtype is not None and "video" in moved:
        moved["video"] = moved["video"].to(video_dtype)
    return moved


@torch.no_grad()
def predict_dataset(
    model: GroundingModel,
    dataset: GroundingDataset,
    eval_cfg: EvalConfig,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "predict",
) -> SplitPredictions:
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=partial(collate, max_chars=dataset.cfg.max_word_chars),
    )
    windows, scores, n_clips = [], [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch = to_device(batch, device, model_dtype(model))
        outputs = model(batch)
        pred = model.predict(
            outputs, batch, top_k=eval_cfg.top_k, max_len=eval_cfg.max_moment_len, nms_iou=eval_cfg.nms_iou
        )
        seconds = (pred.windows.float() * batch["duration"].view(-1, 1, 1)).cpu().numpy()
        for w, p in zip(seconds.astype(np.float64), pred.scores.float().cpu().numpy()):
            keep = distinct(w)  # decoding pads a short list with its best window: it counts once
            windows.append(w[keep])
            scores.append(p[keep])
        n_clips.extend(batch["video_mask"].sum(1).cpu().numpy())
    return SplitPredictions(windows, scores, list(dataset.samples), np.asarray(n_clips))


def distinct(windows: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each (start, end) row, in order."""
    seen: set[tuple[float, float]] = set()
    keep = []
    for i, (start, end) in enumerate(windows.tolist()):
        if (start, end) not in seen:
            seen.add((start, end))
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def ground_truth(samples: list[Sample], n_clips: np.ndarray, protocol: str) -> list[np.ndarray]:
    """Per query, every ground-truth window (m, 2): raw annotated times, or ('quantized', the
    SeqPAN/EMTM protocol) each window's best clip-aligned span."""
    if protocol == "raw":
        return [np.array(s.windows, dtype=np.float64) for s in samples]
    gts = []
    for sample, n in zip(samples, n_clips):
        spans = [time_to_index(s, e, sample.duration, int(n)) for s, e in sample.windows]
        gts.append(
            np.array([index_to_time(s, e, sample.duration, int(n)) for s, e in spans], dtype=np.float64)
        )
    return gts


def score_predictions(preds: SplitPredictions, protocol: str = "raw") -> dict[str, Any]:
    """The split's metrics (`grounding_metrics` against every ground-truth window), with the count of
    ground-truth ends the reader clipped to the video's duration (`n_gt_ends_clipped`)."""
    gts = ground_truth(preds.samples, preds.n_clips, protocol)
    metrics: dict[str, Any] = grounding_metrics(preds.windows, gts, scores=preds.scores)
    metrics["protocol"] = protocol
    metrics["n_gt_windows"] = sum(len(s.windows) for s in preds.samples)
    metrics["n_gt_ends_clipped"] = sum(s.ends_clipped for s in preds.samples)
    return metrics


def query_ious(preds: SplitPredictions, protocol: str = "raw") -> np.ndarray:
    """Per query, the top-1 window's IoU with its best-matching ground-truth window (what R1@m and mIoU
    of `score_predictions` summarise), for statistics over test queries."""
    return top1_ious(preds.windows, ground_truth(preds.samples, preds.n_clips, protocol))


def evaluation_report(
    preds: SplitPredictions, protocol: str = "raw", breakdown: bool = False
) -> dict[str, Any]:
    """What `emtm evaluate` reports: `score_predictions`, and with `breakdown` the metrics by moment
    length relative to the video (`breakdown`: short / medium / long) and in seconds, the public
    evaluator's buckets (`breakdown_seconds`: short / middle / long)."""
    metrics = score_predictions(preds, protocol)
    if breakdown:
        metrics["breakdown"] = length_breakdown(preds, protocol)
        metrics["breakdown_seconds"] = seconds_breakdown(preds, protocol)
    return metrics


def clipping_note(metrics: dict[str, Any]) -> str:
    """One line on the ground-truth ends clipped to the video's duration ("" when none were)."""
    n = metrics.get("n_gt_ends_clipped", 0)
    if not n:
        return ""
    return (
        f"ground truth: {n} of {metrics['n_gt_windows']} windows end past the video's duration and were "
        "clipped to it (the Moment-DETR / Lighthouse evaluator keeps such ends; docs/API.md, protocol)"
    )


def length_breakdown(preds: SplitPredictions, protocol: str = "raw") -> dict[str, dict[str, Any]]:
    """Metrics by moment length relative to the video: short (< 1/3 of it), medium, long (> 2/3)."""
    return _breakdown(preds, protocol, {
        "short": lambda length, duration: length / duration < 1 / 3,
        "medium": lambda length, duration: 1 / 3 <= length / duration <= 2 / 3,
        "long": lambda length, duration: length / duration > 2 / 3,
    })  # fmt: skip


def seconds_breakdown(preds: SplitPredictions, protocol: str = "raw") -> dict[str, dict[str, Any]]:
    """Metrics by moment length in seconds, the public evaluator's buckets (`SECONDS_BUCKETS`)."""
    return _breakdown(
        preds,
        protocol,
        {
            name: (lambda length, _, lo=lo, hi=hi: lo < length <= hi)
            for name, (lo, hi) in SECONDS_BUCKETS.items()
        },
    )


def _breakdown(preds: SplitPredictions, protocol: str, buckets: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per bucket, the queries with a ground-truth window in it, scored against those windows only
    (the public evaluator's rule; with one window per query, the queries whose moment is in it)."""
    gts = ground_truth(preds.samples, preds.n_clips, protocol)
    out = {}
    for name, inside in buckets.items():
        idx, kept = [], []
        for i, sample in enumerate(preds.samples):
            mask = [inside(e - s, sample.duration) for s, e in sample.windows]
            if any(mask):
                idx.append(i)
                kept.append(gts[i][np.asarray(mask)])
        if idx:
            windows, scores = [preds.windows[i] for i in idx], [preds.scores[i] for i in idx]
            out[name] = grounding_metrics(windows, kept, scores=scores)
    return out


def evaluate(
    model: GroundingModel,
    dataset: GroundingDataset,
    eval_cfg: EvalConfig,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, Any]:
    preds = predict_dataset(model, dataset, eval_cfg, device, batch_size, progress=progress, desc=desc)
    return score_predictions(preds, eval_cfg.protocol)
