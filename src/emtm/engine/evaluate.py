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
from emtm.engine.metrics import grounding_metrics
from emtm.engine.speed import model_dtype
from emtm.models.base import GroundingModel


@dataclass
class SplitPredictions:
    windows: list[np.ndarray]  # per query (k, 2) seconds, best first
    scores: list[np.ndarray]  # per query (k,)
    samples: list[Sample]
    n_clips: np.ndarray  # valid clips per query after resampling


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
        windows.extend(seconds.astype(np.float64))
        scores.extend(pred.scores.float().cpu().numpy())
        n_clips.extend(batch["video_mask"].sum(1).cpu().numpy())
    return SplitPredictions(windows, scores, list(dataset.samples), np.asarray(n_clips))


def ground_truth(samples: list[Sample], n_clips: np.ndarray, protocol: str) -> np.ndarray:
    """Raw annotated times, or ('quantized', the SeqPAN/EMTM protocol) the best clip-aligned span."""
    if protocol == "raw":
        return np.array([[s.start, s.end] for s in samples], dtype=np.float64)
    gts = []
    for sample, n in zip(samples, n_clips):
        s, e = time_to_index(sample.start, sample.end, sample.duration, int(n))
        gts.append(index_to_time(s, e, sample.duration, int(n)))
    return np.array(gts, dtype=np.float64)


def score_predictions(preds: SplitPredictions, protocol: str = "raw") -> dict[str, Any]:
    gts = ground_truth(preds.samples, preds.n_clips, protocol)
    metrics: dict[str, Any] = grounding_metrics(preds.windows, gts)
    metrics["protocol"] = protocol
    return metrics


def length_breakdown(preds: SplitPredictions, protocol: str = "raw") -> dict[str, dict[str, Any]]:
    """Metrics for short (< 1/3 of the video), medium and long (> 2/3) moments."""
    gts = ground_truth(preds.samples, preds.n_clips, protocol)
    ratio = np.array([(s.end - s.start) / s.duration for s in preds.samples])
    buckets = {"short": ratio < 1 / 3, "medium": (ratio >= 1 / 3) & (ratio <= 2 / 3), "long": ratio > 2 / 3}
    out = {}
    for name, selected in buckets.items():
        idx = np.flatnonzero(selected)
        if len(idx):
            out[name] = grounding_metrics([preds.windows[i] for i in idx], gts[idx])
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
