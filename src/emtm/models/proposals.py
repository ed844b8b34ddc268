"""A BAN-like boundary-proposal teacher: boundaries -> a short list of proposals -> an IoU scorer.

shared encoder -> context-query attention -> conv block -> per-clip start/end probabilities
  -> proposals: the top-M start clips x the top-M end clips (s <= e), plus each top start completed
     with its best end at or after it (so every sample has at least one proposal)
  -> features [mean of the clips s..e; clip s; clip e; pooled query; s/n, (e+1)/n] -> MLP -> IoU logit

The boundary probabilities are masked softmaxes over each sample's valid clips (a masked CE trains
them sharper than per-clip sigmoids with BCE, where the many negative clips dominate).

Losses: the span models' boundary loss (masked cross-entropy of the start/end distributions against
smoothed GT targets, emtm.models.losses.boundary_loss) plus BCE of each valid proposal's IoU logit
against its true IoU with the GT window, averaged over the valid proposals.

A proposal's score is predicted IoU * sqrt(p_start * p_end): the scorer ranks the moments, the boundary
probabilities keep the ranking on confident boundaries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from emtm.models.base import DataSpec, GroundingModel, ModelConfig, Predictions, spans_to_fractions
from emtm.models.baselines import window_iou
from emtm.models.decode import _span_nms
from emtm.models.encoder import GroundingEncoder
from emtm.models.layers import NEG_INF, ContextQueryAttention, ConvBlock, WeightedPool, masked_softmax
from emtm.models.losses import boundary_loss


def rank_proposals(
    starts: Tensor, ends: Tensor, scores: Tensor, alive: Tensor, top_k: int, nms_iou: float | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The best `top_k` of (B, C) candidate spans [s, e] (inclusive integer positions) by score.

    Ranks the alive candidates by score (ties: lower candidate index first), keeps the best
    max(50, 10 * top_k), applies greedy temporal NMS (drop IoU > nms_iou with a better kept span;
    None: no NMS) and pads with the best span when fewer than top_k survive. Each row needs at least
    one alive candidate. Returns starts, ends, scores, each (B, top_k).
    """
    n_cand = min(starts.shape[1], max(50, 10 * top_k))
    order = scores.masked_fill(~alive, float("-inf")).argsort(dim=1, descending=True, stable=True)[:, :n_cand]
    starts, ends, scores, alive = (t.gather(1, order) for t in (starts, ends, scores, alive))
    keep = alive if nms_iou is None else _span_nms(starts, ends, alive, nms_iou)
    rank = torch.arange(n_cand, device=starts.device)
    first = torch.where(keep, rank, rank + n_cand).argsort(dim=1)[:, :top_k]  # kept ones, best first
    first = torch.where(keep.gather(1, first), first, torch.zeros_like(first))  # too few kept: the best
    if first.shape[1] < top_k:
        first = torch.cat([first, first.new_zeros(first.shape[0], top_k - first.shape[1])], dim=1)
    return starts.gather(1, first), ends.gather(1, first), scores.gather(1, first)


def gather_clips(x: Tensor, index: Tensor) -> Tensor:
    """Rows `index` (B, K) of a (B, T, d) sequence -> (B, K, d)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class ProposalConfig(ModelConfig):
    d: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    char_dim: int = Field(50, ge=1)
    n_fusion_layers: int = Field(4, ge=1)
    top_m: int = Field(8, ge=1, description="start and end clips kept per sample")
    max_proposal_len: int | None = Field(None, ge=1, description="longest proposal, in clips")
    boundary_weight: float = Field(1.0, ge=0)
    iou_weight: float = Field(1.0, ge=0)


class BoundaryProposals(GroundingModel):
    Config = ProposalConfig
    output_form = "proposals"

    def __init__(self, config: ProposalConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        d = config.d
        self.encoder = GroundingEncoder(spec, d, config.dropout, config.char_dim)
        self.cq_attention = ContextQueryAttention(d, config.dropout)
        self.fusion = ConvBlock(d, config.n_fusion_layers, 7, config.dropout)
        self.query_pool = WeightedPool(d)
        self.boundary_head = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(d, 2)
        )
        self.scorer = nn.Sequential(
            nn.Linear(4 * d + 2, 2 * d),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(2 * d, d),
            nn.ReLU(),
            nn.Linear(d, 1),
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        enc = self.encoder(batch)
        video_mask = enc.video_mask
        fused = self.cq_attention(enc.video, enc.query, video_mask, enc.query_mask)
        fused = self.fusion(fused, video_mask)
        query_vec = self.query_pool(enc.query, enc.query_mask)
        start_logits, end_logits = self.boundary_head(fused).unbind(-1)  # (B, L) each
        starts, ends, proposal_mask = self.generate(start_logits, end_logits, video_mask)
        features = self.proposal_features(fused, query_vec, starts, ends, video_mask)
        iou_logits = self.scorer(features).squeeze(-1)
        return {
            "start_logits": start_logits,
            "end_logits": end_logits,
            "starts": starts,  # (B, K) clip index, 0 where the proposal is not valid
            "ends": ends,  # (B, K) clip index, inclusive
            "proposal_mask": proposal_mask,  # (B, K) bool
            "iou_logits": iou_logits,  # (B, K)
        }

    @torch.no_grad()
    def generate(
        self, start_logits: Tensor, end_logits: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """K = M * M + M proposals per sample: the top-M starts x top-M ends, and each top start completed."""
        m, length = self.config.top_m, mask.shape[1]
        max_len = self.config.max_proposal_len or length
        # Ranking keys: the logits on valid clips, -inf on padding (and on the filler up to M clips).
        start_key = start_logits.float().masked_fill(~mask, NEG_INF)
        end_key = end_logits.float().masked_fill(~mask, NEG_INF)
        if length < m:
            start_key, end_key = (F.pad(key, (0, m - length), value=NEG_INF) for key in (start_key, end_key))
        top_starts, top_ends = start_key.topk(m, dim=1).indices, end_key.topk(m, dim=1).indices  # (B, M)
        start_ok = start_key.gather(1, top_starts).isfinite()
        end_ok = end_key.gather(1, top_ends).isfinite()

        grid_starts = top_starts.unsqueeze(2).expand(-1, m, m)
        grid_ends = top_ends.unsqueeze(1).expand(-1, m, m)
        span = grid_ends - grid_starts
        grid_ok = start_ok.unsqueeze(2) & end_ok.unsqueeze(1) & (span >= 0) & (span < max_len)

        # Complete each top start with the most probable end in [s, s + max_len) among the valid clips.
        positions = torch.arange(length, device=mask.device)
        offset = positions.view(1, 1, -1) - top_starts.unsqueeze(2)  # (B, M, L)
        allowed = (offset >= 0) & (offset < max_len) & mask.unsqueeze(1)
        best_ends = end_key[:, :length].unsqueeze(1).masked_fill(~allowed, NEG_INF).argmax(-1)  # (B, M)
        in_grid = (best_ends.unsqueeze(2) == top_ends.unsqueeze(1)).any(-1)  # that pair is already there
        completed_ok = start_ok & ~in_grid

        starts = torch.cat([grid_starts.flatten(1), top_starts], 1)
        ends = torch.cat([grid_ends.flatten(1), best_ends], 1)
        ok = torch.cat([grid_ok.flatten(1), completed_ok], 1)
        return starts.masked_fill(~ok, 0), ends.masked_fill(~ok, 0), ok

    @staticmethod
    def proposal_features(
        fused: Tensor, query_vec: Tensor, starts: Tensor, ends: Tensor, mask: Tensor
    ) -> Tensor:
        """(B, K, 4d + 2): mean of clips s..e (from cumulative sums), clip s, clip e, query, s/n, (e+1)/n."""
        prefix = F.pad(fused.cumsum(1), (0, 0, 1, 0))  # (B, L + 1, d), prefix[:, t] = sum of clips < t
        n_clips = (ends - starts + 1).unsqueeze(-1).to(fused.dtype)
        span_mean = (gather_clips(prefix, ends + 1) - gather_clips(prefix, starts)) / n_clips
        position = spans_to_fractions(torch.stack([starts, ends], -1), mask).to(fused.dtype)  # (B, K, 2)
        query = query_vec.unsqueeze(1).expand(-1, starts.shape[1], -1)
        return torch.cat(
            [span_mean, gather_clips(fused, starts), gather_clips(fused, ends), query, position], -1
        )

    def proposal_scores(self, outputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """(B, K) predicted IoU * sqrt(p_start * p_end); 0 for invalid proposals."""
        p_start = masked_softmax(outputs["start_logits"].float(), mask).gather(1, outputs["starts"])
        p_end = masked_softmax(outputs["end_logits"].float(), mask).gather(1, outputs["ends"])
        scores = torch.sigmoid(outputs["iou_logits"].float()) * torch.sqrt(p_start * p_end)
        return scores * outputs["proposal_mask"]

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        boundary = boundary_loss(outputs["start_logits"], outputs["end_logits"], batch)
        windows = spans_to_fractions(
            torch.stack([outputs["starts"], outputs["ends"]], -1), batch["video_mask"]
        )
        gt = torch.stack([batch["start_frac"], batch["end_frac"]], -1).float()
        true_iou = window_iou(windows.flatten(0, 1), gt.repeat_interleave(windows.shape[1], 0))
        true_iou = true_iou.view_as(outputs["iou_logits"])
        proposal_mask = outputs["proposal_mask"]
        bce = F.binary_cross_entropy_with_logits(outputs["iou_logits"].float(), true_iou, reduction="none")
        iou = (bce * proposal_mask).sum() / proposal_mask.sum().clamp_min(1)

        total = self.config.boundary_weight * boundary + self.config.iou_weight * iou
        return total, {"boundary": boundary.item(), "iou": iou.item()}

    def predict(
        self,
        outputs: dict[str, Tensor],
        batch: dict[str, Tensor],
        top_k: int = 5,
        max_len: int | None = None,
        nms_iou: float | None = 0.5,
    ) -> Predictions:
        """Proposals ranked by score, NMS, top_k.

        A proposal longer than max_len clips is cut to its first max_len clips.
        """
        starts, ends = outputs["starts"], outputs["ends"]
        if max_len is not None:
            ends = torch.minimum(ends, starts + max_len - 1)
        starts, ends, scores = rank_proposals(
            starts,
            ends,
            self.proposal_scores(outputs, batch["video_mask"]),
            outputs["proposal_mask"],
            top_k,
            nms_iou,
        )
        return Predictions(spans_to_fractions(torch.stack([starts, ends], -1), batch["video_mask"]), scores)

    def teacher_outputs(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """All K proposals, best first; invalid ones last with score 0, window [0, 1] and valid False."""
        scores = self.proposal_scores(outputs, batch["video_mask"])
        alive = outputs["proposal_mask"]
        order = scores.masked_fill(~alive, -1.0).argsort(dim=1, descending=True, stable=True)
        windows = spans_to_fractions(
            torch.stack([outputs["starts"], outputs["ends"]], -1), batch["video_mask"]
        )
        windows = torch.where(alive.unsqueeze(-1), windows, torch.tensor([0.0, 1.0], device=windows.device))
        return {
            "windows": windows.gather(1, order.unsqueeze(-1).expand(-1, -1, 2)),
            "scores": scores.gather(1, order),
            "valid": alive.gather(1, order),
        }
