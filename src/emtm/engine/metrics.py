"""The evaluator's maths: temporal IoU, R@k@m, mIoU and mAP, and temporal NMS (numpy, float64)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

THRESHOLDS = (0.3, 0.5, 0.7)
TOP_KS = (1, 5)
MAP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5, 0.55, ..., 0.95
MAP_WINDOWS = 10  # predicted windows per query that mAP ranks, as the Moment-DETR evaluator


def temporal_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of ``[start, end]`` windows, arrays ``(..., 2)`` that broadcast against each other.

    Computed in float64. Disjoint or touching windows give 0; so does a zero-length union
    (two identical points), where the ratio is undefined. Windows are assumed to have start <= end.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape[-1:] != (2,) or gt.shape[-1:] != (2,):
        raise ValueError(f"windows must have a last axis of size 2, got {pred.shape} and {gt.shape}")
    inter = np.minimum(pred[..., 1], gt[..., 1]) - np.maximum(pred[..., 0], gt[..., 0])
    union = np.maximum(pred[..., 1], gt[..., 1]) - np.minimum(pred[..., 0], gt[..., 0])
    ok = inter > 0  # implies union >= inter > 0
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def grounding_metrics(
    predictions: Sequence[np.ndarray],
    ground_truth: np.ndarray | Sequence[np.ndarray],
    thresholds: Sequence[float] = THRESHOLDS,
    top_ks: Sequence[int] = TOP_KS,
    scores: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """R@k@m, mIoU and mAP in percent, plus ``n_queries``.

    ``predictions[i]`` holds query i's windows ``(k_i, 2)``, best first (already NMS-ed),
    ``k_i >= 1``; ``ground_truth`` is ``(N, 2)`` (one window per query) or a sequence of ``(m_i, 2)``
    arrays, ``m_i >= 1``: every ground-truth window of query i. A window's IoU with a query is its
    IoU with the best-matching ground-truth window. ``r{k}@{m}`` is the share of queries where any
    of the first k windows (all of them if fewer than k) has IoU >= m, compared exactly; ``miou``
    is the mean IoU of the top-1 window. With one window per query these are the single-window
    definitions exactly.

    ``map`` is the mean over queries and over the IoU thresholds 0.5, 0.55, ..., 0.95 of each query's
    average precision (``average_precision``) of its first ``MAP_WINDOWS`` windows against all its
    ground-truth windows; ``map@0.5`` and ``map@0.75`` at one threshold. The windows are ranked by
    ``scores[i]`` (descending, ties in the given order) when given, else in the given order.
    """
    gts = _gt_list(ground_truth)
    n = len(gts)
    if n == 0 or len(predictions) != n:
        raise ValueError(f"need one prediction per query and at least one query: {len(predictions)} vs {n}")
    if scores is not None and len(scores) != n:
        raise ValueError(f"{len(scores)} score arrays for {n} queries")
    k_max = max(top_ks)
    ious = np.full((n, k_max), -1.0)  # -1: no window at that rank
    aps = np.zeros((n, len(MAP_THRESHOLDS)))
    for i, windows in enumerate(predictions):
        windows = np.asarray(windows, dtype=np.float64)
        if windows.ndim != 2 or windows.shape[1] != 2 or len(windows) == 0:
            raise ValueError(f"prediction {i} must be (k, 2) with k >= 1, got {windows.shape}")
        top = windows[:k_max]
        ious[i, : len(top)] = temporal_iou(top[:, None, :], gts[i][None, :, :]).max(axis=1)
        ranked = windows[:MAP_WINDOWS]
        if scores is not None:
            order = np.argsort(-np.asarray(scores[i], dtype=np.float64)[:MAP_WINDOWS], kind="stable")
            ranked = ranked[order]
        aps[i] = average_precision(temporal_iou(ranked[:, None, :], gts[i][None, :, :]), MAP_THRESHOLDS)
    out: dict[str, float] = {}
    for k in top_ks:
        best = ious[:, :k].max(axis=1)
        for m in thresholds:
            out[f"r{k}@{m}"] = float(np.mean(best >= m) * 100.0)
    out["miou"] = float(np.mean(ious[:, 0]) * 100.0)
    out["map"] = float(np.mean(aps) * 100.0)
    for m in (0.5, 0.75):
        out[f"map@{m}"] = float(np.mean(aps[:, MAP_THRESHOLDS.index(m)]) * 100.0)
    out["n_queries"] = n
    return out


def top1_ious(
    predictions: Sequence[np.ndarray], ground_truth: np.ndarray | Sequence[np.ndarray]
) -> np.ndarray:
    """Per query, the IoU of its first window with the best-matching ground-truth window: the values
    whose mean is ``miou`` and whose share >= m is ``r1@m`` in `grounding_metrics`."""
    gts = _gt_list(ground_truth)
    if len(predictions) != len(gts):
        raise ValueError(f"need one prediction per query: {len(predictions)} vs {len(gts)}")
    return np.array(
        [temporal_iou(np.asarray(w, dtype=np.float64)[:1], g).max() for w, g in zip(predictions, gts)]
    )


def average_precision(ious: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """One query's average precision at each IoU threshold, from ``ious`` ``(k, m)``: row r the r-th
    ranked predicted window's IoU with each of the m ground-truth windows.

    At threshold t the windows are taken in rank order; each is a true positive when some ground-truth
    window not yet matched has IoU >= t with it (it takes the one of highest IoU), else a false
    positive. AP is the area under the precision-recall curve with precision made non-increasing
    (each point takes the best precision at its recall or higher; recall = matched / m), i.e. the
    sum, over the true positives, of 1/m times that interpolated precision: the ActivityNet
    detection AP that the Moment-DETR / Lighthouse evaluator applies per query.
    """
    ious = np.asarray(ious, dtype=np.float64)
    k, m = ious.shape
    out = np.zeros(len(thresholds))
    ranks = np.arange(1, k + 1)
    for j, t in enumerate(thresholds):
        if m == 1:  # one window: the first hit is the only true positive
            tp = (ious[:, 0] >= t) & (np.cumsum(ious[:, 0] >= t) == 1)
        else:
            tp = np.zeros(k, dtype=bool)
            free = np.ones(m, dtype=bool)
            for r in range(k):
                candidates = np.where(free & (ious[r] >= t), ious[r], -1.0)
                g = int(np.argmax(candidates))
                if candidates[g] >= 0:
                    tp[r], free[g] = True, False
        precision = np.cumsum(tp) / ranks
        interpolated = np.maximum.accumulate(precision[::-1])[::-1]
        out[j] = interpolated[tp].sum() / m
    return out


def _gt_list(ground_truth: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(ground_truth, np.ndarray) and ground_truth.dtype != object:
        if ground_truth.ndim != 2 or ground_truth.shape[1] != 2:
            raise ValueError(f"ground_truth must be (N, 2), got {ground_truth.shape}")
        return [row[None, :] for row in ground_truth.astype(np.float64)]
    gts = [np.asarray(g, dtype=np.float64) for g in ground_truth]
    for i, g in enumerate(gts):
        if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0:
            raise ValueError(f"ground truth {i} must be (m, 2) with m >= 1, got {g.shape}")
    return gts


def temporal_nms(
    windows: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None = None
) -> np.ndarray:
    """Greedy NMS: indices of the kept windows, by score descending.

    A window is dropped when its IoU with an already kept, higher-ranked window is
    ``> iou_threshold`` (IoU equal to the threshold survives). Equal scores rank the lower index
    first. Stops after ``top_k`` kept windows when given.
    """
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(windows) != len(scores):
        raise ValueError(f"{len(windows)} windows but {len(scores)} scores")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    order = np.argsort(-scores, kind="stable")
    ious = temporal_iou(windows[:, None, :], windows[None, :, :])
    suppressed = np.zeros(len(windows), dtype=bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        if top_k is not None and len(keep) >= top_k:
            break
        suppressed |= ious[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def prior_metrics(train: Sequence[Any], test: Sequence[Any]) -> dict[str, float]:
    """The moment prior (the `prior` baseline): every test query gets the mean training window, in
    fractions of its video, scored like any model (each sample needs start, end and duration)."""
    fractions = np.mean([[s.start / s.duration, s.end / s.duration] for s in train], axis=0)
    preds = [fractions[None, :] * s.duration for s in test]
    return grounding_metrics(preds, np.asarray([[s.start, s.end] for s in test], dtype=np.float64))
