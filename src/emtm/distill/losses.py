"""Distillation losses (emtm-method.md §6, with the deliberate corrections).

* ensemble hard loss: cross-entropy of the KAU mixture (a distribution) against the smoothed GT;
* KD loss: KL(ensemble || student) at temperature T, student masked with -inf before one softmax,
  batch mean, scaled by T², stop-gradient on the ensemble by default.
"""

from __future__ import annotations

from torch import Tensor

from emtm.models.layers import masked_log_softmax
from emtm.models.losses import smoothed_boundary_targets


def distribution_ce_per_query(dist: Tensor, index: Tensor, mask: Tensor) -> Tensor:
    """(B,): soft-target CE of each row of a (B, L) distribution against the smoothed boundary label."""
    log_p = dist.clamp_min(1e-12).log().masked_fill(~mask, 0.0)
    return -(smoothed_boundary_targets(index, mask) * log_p).sum(1)


def distribution_ce(dist: Tensor, index: Tensor, mask: Tensor) -> Tensor:
    """distribution_ce_per_query, batch mean."""
    return distribution_ce_per_query(dist, index, mask).mean()


def ensemble_hard_loss_per_query(start: Tensor, end: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """(B,): distribution_ce_per_query of the start plus that of the end distribution."""
    mask = batch["video_mask"]
    return distribution_ce_per_query(start, batch["start_index"], mask) + distribution_ce_per_query(
        end, batch["end_index"], mask
    )


def ensemble_hard_loss(start: Tensor, end: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """ensemble_hard_loss_per_query, batch mean."""
    return ensemble_hard_loss_per_query(start, end, batch).mean()


def kd_loss(
    student_logits: Tensor, target: Tensor, mask: Tensor, temperature: float = 1.0, detach: bool = True
) -> Tensor:
    """T² · mean over the batch of KL(target || softmax(student_logits / T)) over valid clips."""
    if detach:
        target = target.detach()
    log_student = masked_log_softmax(student_logits.float() / temperature, mask)
    log_target = target.clamp_min(1e-12).log()
    kl = (target * (log_target - log_student)).masked_fill(~mask | (target <= 0), 0.0).sum(1)
    return kl.mean() * temperature**2
