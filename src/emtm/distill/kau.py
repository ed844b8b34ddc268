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


class KnowledgeAggregation(nn.Module):
    def __init__(self, d: int, n_teachers: int, hidden: int = 32, per_clip: bool = False):
        super().__init__()
        self.n_teachers = n_teachers
        self.per_clip = per_clip
        self.scales = nn.ModuleList(nn.Conv1d(d, hidden, k, padding=k // 2) for k in (3, 5, 7))
        self.scale_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in (3, 5, 7))
        self.query = nn.Sequential(nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.ReLU())
        in_dim = hidden if per_clip else 2 * hidden
        self.head = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * n_teachers))

    def forward(self, video: Tensor, query: Tensor, video_mask: Tensor, query_mask: Tensor) -> Tensor:
        """Teacher weights: (B, K, 2) [start, end], or (B, L, K, 2) with per_clip; softmax over K."""
        video = masked_fill_padding(video, video_mask).transpose(1, 2)  # (B, d, L)
        multi_scale = sum(
            torch.relu(norm(conv(video).transpose(1, 2))) for conv, norm in zip(self.scales, self.scale_norms)
        )
        global_query = self.query(masked_max(query, query_mask))  # (B, hidden)
        interaction = masked_fill_padding(multi_scale * global_query.unsqueeze(1), video_mask)  # (B, L, h)
        if self.per_clip:
            logits = self.head(interaction).view(*interaction.shape[:2], self.n_teachers, 2)
            return torch.softmax(logits, dim=2)
        pooled = torch.cat([masked_mean(interaction, video_mask), masked_max(interaction, video_mask)], -1)
        return torch.softmax(self.head(pooled).view(-1, self.n_teachers, 2), dim=1)


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
