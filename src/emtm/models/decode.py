"""Span decoding at inference, on the device: start/end logits -> ranked clip spans."""

from __future__ import annotations

import torch
from torch import Tensor


def _masked_exp(logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``exp(logit - max over valid clips)``, 0 on padding, and its sum over the clips, ``(B, 1)``."""
    logits = logits.float().masked_fill(~mask, float("-inf"))
    ex = (logits - logits.amax(dim=-1, keepdim=True)).exp()
    return ex, ex.sum(dim=-1, keepdim=True)


def _span_nms(starts: Tensor, ends: Tensor, alive: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over ``(B, C)`` candidates already ranked best first, on clip intervals [s, e + 1).

    Returns which candidates survive: a candidate is dropped when its IoU with a surviving,
    better-ranked one is ``> iou_threshold``. Loops over the C ranks, batched over B.
    """
    a, b = starts.double(), (ends + 1).double()
    inter = (torch.minimum(b[:, :, None], b[:, None, :]) - torch.maximum(a[:, :, None], a[:, None, :])).clamp(
        min=0
    )
    union = torch.maximum(b[:, :, None], b[:, None, :]) - torch.minimum(a[:, :, None], a[:, None, :])
    n = starts.shape[1]
    later = torch.ones(n, n, dtype=torch.bool, device=starts.device).triu(diagonal=1)
    overlaps = (inter / union > iou_threshold) & later  # [b, c, d]: c (better) suppresses d
    keep = alive.clone()
    for c in range(n):  # keep[:, c] is final once ranks < c are done
        keep = keep & ~(keep[:, c : c + 1] & overlaps[:, c, :])
    return keep


def decode_spans(
    start_logits: Tensor,
    end_logits: Tensor,
    mask: Tensor,
    top_k: int = 1,
    max_len: int | None = None,
    nms_iou: float | None = 0.5,
) -> tuple[Tensor, Tensor]:
    """Best ``top_k`` spans ``(B, top_k, 2)`` (start, end clip, inclusive) and scores ``(B, top_k)``.

    ``mask`` ``(B, L)`` (bool or 0/1) marks the valid clips, which come first; each sample needs at
    least one. The score of span ``(i, j)`` is ``Ps[i] * Pe[j]`` (masked softmaxes over the clips),
    for ``i <= j``, both valid, and ``j - i < max_len`` when given. Spans are ranked by score, ties
    to the smaller ``i`` then the smaller ``j``; the ranking uses the unnormalised products, so a
    sample decodes to the same spans alone or batched with longer, padded ones.

    ``top_k > 1`` ranks the best ``max(50, 10 * top_k)`` spans, applies greedy NMS on the clip
    intervals ``[i, j + 1)`` (drop IoU ``> nms_iou``; ``None``: no NMS), keeps the first ``top_k``
    and pads with the best span when fewer survive.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    mask = mask.bool()
    n_batch, length = mask.shape
    ex_s, z_s = _masked_exp(start_logits, mask)
    ex_e, z_e = _masked_exp(end_logits, mask)
    p_s, p_e = ex_s / z_s, ex_e / z_e

    pos = torch.arange(length, device=mask.device)
    offset = pos[None, :] - pos[:, None]  # [i, j] = j - i
    allowed = offset >= 0
    if max_len is not None:
        allowed &= offset < max_len
    valid = allowed & mask[:, :, None] & mask[:, None, :]
    rank = (ex_s[:, :, None] * ex_e[:, None, :]).masked_fill(~valid, -1.0).flatten(1)

    if top_k == 1:
        order = rank.argmax(dim=1, keepdim=True)  # first maximum: smallest i, then j
    else:
        n_cand = min(max(50, 10 * top_k), length * length)
        vals, idx = rank.topk(n_cand, dim=1)
        idx, perm = idx.sort(dim=1)  # make the order of ties deterministic: by flat index
        vals, perm = vals.gather(1, perm).sort(dim=1, descending=True, stable=True)
        cand = idx.gather(1, perm)
        alive = vals >= 0
        starts, ends = cand // length, cand % length
        keep = alive if nms_iou is None else _span_nms(starts, ends, alive, nms_iou)
        rank_pos = torch.arange(n_cand, device=mask.device)
        first = torch.where(keep, rank_pos, rank_pos + n_cand).argsort(dim=1)[:, :top_k]
        first = torch.where(keep.gather(1, first), first, torch.zeros_like(first))
        if first.shape[1] < top_k:  # fewer candidates than top_k: pad with the best
            first = torch.cat([first, first.new_zeros(n_batch, top_k - first.shape[1])], dim=1)
        order = cand.gather(1, first)
    s, e = order // length, order % length
    spans = torch.stack([s, e], dim=-1)
    scores = p_s.gather(1, s) * p_e.gather(1, e)
    return spans, scores


def spans_to_seconds(spans: Tensor, n_valid: Tensor, durations: Tensor) -> Tensor:
    """Clip spans ``(B, k, 2)`` -> seconds: ``s * dur / n`` and ``(e + 1) * dur / n``, per sample."""
    dtype = durations.dtype if durations.is_floating_point() else torch.get_default_dtype()
    dur = durations.to(dtype).reshape(-1, 1, 1)
    n = n_valid.to(dtype).reshape(-1, 1, 1)
    edges = spans.to(dtype) + torch.tensor([0.0, 1.0], dtype=dtype, device=spans.device)
    return edges * dur / n
