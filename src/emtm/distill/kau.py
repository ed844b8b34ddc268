"""Knowledge Aggregation Unit (emtm-method.md §4): per-sample teacher weights from the shared encoder.

Multi-scale 1D convolutions (kernels 3, 5, 7) over the encoded video, a masked max-pooled global query
vector, their interaction pooled over the VALID clips (any length; no dense layer over a fixed L),
and a head that gives each teacher a weight for the start and for the end, softmax over teachers.
Deliberate corrections of the authors' code: masked query pooling, variable-length pooling, and
LayerNorm instead of BatchNorm (so a sample's weights do not depend on the rest of the batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emtm.models.layers import masked_fill_padding, masked_max, masked_mean

N_RELIABILITY = 3  # per teacher and boundary: normalised entropy, peak mass, agreement with the others


class KnowledgeAggregation(nn.Module):
    """The paper's KAU, with two optional additions from the multi-teacher KD literature:

    * `floor` f: weights f / K + (1 - f) softmax, so no teacher's weight reaches 0 and its gradient
      never vanishes (a plain softmax near a corner of the simplex never recovers);
    * `reliability`: the head also reads, per teacher and boundary, how sure the teacher is on this
      sample and whether the others agree (`reliability_features`), not only the video and query.
    """

    def __init__(
        self,
        d: int,
        n_teachers: int,
        hidden: int = 32,
        per_clip: bool = False,
        floor: float = 0.0,
        reliability: bool = False,
    ):
        super().__init__()
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"the KAU's weight floor must be in [0, 1), got {floor}")
        if reliability and per_clip:
            raise ValueError("reliability inputs are per sample; they do not combine with per-clip weights")
        self.n_teachers = n_teachers
        self.per_clip = per_clip
        self.floor = floor
        self.reliability = reliability
        self.scales = nn.ModuleList(nn.Conv1d(d, hidden, k, padding=k // 2) for k in (3, 5, 7))
        self.scale_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in (3, 5, 7))
        self.query = nn.Sequential(nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.ReLU())
        in_dim = hidden if per_clip else 2 * hidden
        in_dim += N_RELIABILITY * 2 * n_teachers if reliability else 0
        self.head = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * n_teachers))

    def forward(
        self,
        video: Tensor,
        query: Tensor,
        video_mask: Tensor,
        query_mask: Tensor,
        teacher_dists: Tensor | None = None,
    ) -> Tensor:
        """Teacher weights: (B, K, 2) [start, end], or (B, L, K, 2) with per_clip; softmax over K (with
        the floor). `teacher_dists` (B, K, 2, L) is needed with reliability inputs."""
        video = masked_fill_padding(video, video_mask).transpose(1, 2)  # (B, d, L)
        multi_scale = sum(
            torch.relu(norm(conv(video).transpose(1, 2))) for conv, norm in zip(self.scales, self.scale_norms)
        )
        global_query = self.query(masked_max(query, query_mask))  # (B, hidden)
        interaction = masked_fill_padding(multi_scale * global_query.unsqueeze(1), video_mask)  # (B, L, h)
        if self.per_clip:
            logits = self.head(interaction).view(*interaction.shape[:2], self.n_teachers, 2)
            return self.floored(torch.softmax(logits, dim=2))
        pooled = torch.cat([masked_mean(interaction, video_mask), masked_max(interaction, video_mask)], -1)
        if self.reliability:
            if teacher_dists is None:
                raise ValueError("a KAU with reliability inputs needs the teachers' distributions")
            pooled = torch.cat([pooled, reliability_features(teacher_dists, video_mask).flatten(1)], -1)
        return self.floored(torch.softmax(self.head(pooled).view(-1, self.n_teachers, 2), dim=1))

    def floored(self, weights: Tensor) -> Tensor:
        if not self.floor:
            return weights
        return self.floor / self.n_teachers + (1.0 - self.floor) * weights


def reliability_features(teacher_dists: Tensor, video_mask: Tensor) -> Tensor:
    """(B, K, 2, 3) per teacher and boundary: entropy / log(L) (0 sure, 1 uniform), the peak's mass, and
    the Bhattacharyya overlap with the mean of the other teachers (1: they agree; 1 with one teacher)."""
    p = teacher_dists * video_mask[:, None, None, :]
    n = video_mask.sum(1).clamp_min(2).to(p.dtype)[:, None, None]
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / n.log()
    peak = p.amax(-1)
    k = p.shape[1]
    if k > 1:
        others = (p.sum(1, keepdim=True) - p) / (k - 1)
        agreement = (p * others).clamp_min(0).sqrt().sum(-1)
    else:
        agreement = torch.ones_like(peak)
    return torch.stack([entropy, peak, agreement], -1).detach()


def ensemble(teacher_dists: Tensor, weights: Tensor, video_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mixture of teachers' start/end distributions.

    teacher_dists: (B, K, 2, L) unified distributions; weights: (B, K, 2) or per clip (B, L, K, 2).
    Returns start and end distributions (B, L), renormalised over valid clips.
    """
    if weights.dim() == 3:
        mixed = (weights.unsqueeze(-1) * teacher_dists).sum(1)  # (B, 2, L)
    else:
        mixed = (weights.permute(0, 2, 3, 1) * teacher_dists).sum(1)  # (B, K, 2, L) -> (B, 2, L)
    mixed = mixed * video_mask.unsqueeze(1)
    mixed = mixed / mixed.sum(-1, keepdim=True).clamp_min(1e-12)
    return mixed[:, 0], mixed[:, 1]
