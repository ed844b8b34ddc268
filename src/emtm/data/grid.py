"""The clip grid: a video of ``duration`` seconds as ``n_clips`` equal clips.

Clip ``i`` covers ``[i, i + 1) * duration / n_clips`` (the VSLNet/SeqPAN convention), so the clip
pair ``(s, e)`` (inclusive) stands for the span ``[s * duration / n_clips, (e + 1) * duration / n_clips]``.
"""

from __future__ import annotations

import numpy as np


def _check_grid(duration: float, n_clips: int) -> None:
    if not duration > 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")


def time_to_index(start: float, end: float, duration: float, n_clips: int) -> tuple[int, int]:
    """The clip pair ``(s, e)``, ``s <= e``, whose span has the highest IoU with ``[start, end]``.

    Exhaustive search over all ``s <= e`` pairs (as VSLNet's ``time_to_index``), in float64.
    Ties go to the smallest ``s``, then the smallest ``e`` (the first pair in row-major order,
    i.e. the shortest span among those with that start). When every pair has IoU 0 (a zero-length
    moment, or one outside ``[0, duration]``), the result is the clips that hold ``start`` and
    ``end``, clamped to the grid.
    """
    _check_grid(duration, n_clips)
    idx = np.arange(n_clips, dtype=np.float64)
    starts = idx * duration / n_clips
    ends = (idx + 1) * duration / n_clips
    inter = np.minimum(ends[None, :], end) - np.maximum(starts[:, None], start)
    union = np.maximum(ends[None, :], end) - np.minimum(starts[:, None], start)
    iou = np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    iou[np.tril_indices(n_clips, k=-1)] = -1.0  # e < s is not a span
    flat = int(np.argmax(iou))  # first maximum in row-major order
    if iou.flat[flat] > 0:
        s, e = divmod(flat, n_clips)
        return s, e
    s = int(np.clip(np.floor(start * n_clips / duration), 0, n_clips - 1))
    e = int(np.clip(np.floor(end * n_clips / duration), 0, n_clips - 1))
    return s, max(s, e)


def index_to_time(s: int, e: int, duration: float, n_clips: int) -> tuple[float, float]:
    """Seconds ``(s * duration / n_clips, (e + 1) * duration / n_clips)`` of the clip pair ``(s, e)``."""
    _check_grid(duration, n_clips)
    return s * duration / n_clips, (e + 1) * duration / n_clips
