"""Ground-truth losses shared by the span models: smoothed boundary cross-entropy and sequence matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from emtm.models.layers import masked_log_softmax

OUTSIDE, BEGIN, INSIDE, END = 0, 1, 2, 3


def smoothed_boundary_targets(index: Tensor, mask: Tensor, peak: float = 0.5, floor: float = 1e-10) -> Tensor:
    """SeqPAN's soft boundary label: `peak` on the GT clip, the rest split over its two neighbours.

    A neighbour outside the valid clips gives its share back to the GT clip.
    """
    b, length = mask.shape
    targets = torch.full((b, length), floor, device=mask.device) * mask
    rows = torch.arange(b, device=mask.device)
    n_valid = mask.sum(1)
    share = (1.0 - n_valid.to(torch.float32) * floor - peak) / 2
    targets[rows, index] += peak
    for offset in (-1, 1):
        neighbour = index + offset
        inside = (neighbour >= 0) & (neighbour < n_valid)
        targets[rows[inside], neighbour[inside]] += share[inside]
        targets[rows[~inside], index[~inside]] += share[~inside]
    return targets


def boundary_loss(start_logits: Tensor, end_logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Cross-entropy of the masked start/end distributions against smoothed GT targets, batch mean."""
    mask = batch["video_mask"]
    loss = 0.0
    for logits, index in ((start_logits, batch["start_index"]), (end_logits, batch["end_index"])):
        log_p = masked_log_softmax(logits.float(), mask).masked_fill(~mask, 0.0)
        loss = loss - (smoothed_boundary_targets(index, mask) * log_p).sum(1).mean()
    return loss


def matching_labels(start: Tensor, end: Tensor, mask: Tensor, ext: int = 2) -> Tensor:
    """Per-clip classes: begin [s-ext, s+ext], end [e-ext, e+ext], inside between, else outside."""
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    s, e = start.unsqueeze(1), end.unsqueeze(1)
    begin_right = torch.minimum(s + ext, torch.maximum(s, e - ext - 1))
    labels = torch.full_like(mask, OUTSIDE, dtype=torch.long)
    labels[(positions > begin_right) & (positions < e - ext)] = INSIDE
    labels[(positions >= s - ext) & (positions <= begin_right)] = BEGIN
    labels[(positions >= e - ext) & (positions <= e + ext)] = END
    return labels


def matching_loss(logits: Tensor, label_embeddings: Tensor, batch: dict[str, Tensor], ext: int = 2) -> Tensor:
    """4-class CE averaged over valid clips, plus the orthogonality penalty on the label embeddings."""
    mask = batch["video_mask"]
    labels = matching_labels(batch["start_index"], batch["end_index"], mask, ext)
    ce = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
    ce = (ce * mask).sum() / mask.sum().clamp_min(1)
    gram = label_embeddings @ label_embeddings.t()
    off_diagonal = gram * (1 - torch.eye(gram.shape[0], device=gram.device))
    return ce + off_diagonal.norm()
