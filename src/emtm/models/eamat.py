"""EAMAT (Yang & Wu, IJCAI 2022: Entity-aware and Motion-aware Transformers), a heavy span teacher.

EAMAT localises coarse-to-fine: an entity-aware stage finds the clips that show the query's entities
(foreground), then a motion-aware stage, on the foreground-gated video and the query's motion words,
models fine motion at several temporal scales and predicts the boundaries. Here:

    encoder -> word roles (entity / motion weights per word; a learned stand-in for the paper's POS tags)
    entity-aware branch: n_layers cross-modal layers (clip self-attention, clips <-> words cross-attention)
        -> foreground logits per clip
    motion-aware branch: video * sigmoid(foreground) -> CQA with the motion query -> n_layers multi-scale
        temporal attention layers (head groups restricted to windows of `windows` clips, key padding masked;
        the update gated by the pooled motion query)
    fuse: concat(entity, motion) -> linear -> sequence matching -> conditioned predictor -> start/end logits

The motion query is built from the entity branch's video-aware words, so the query flows through both
stages. EAMAT's multi-step LSTMs in the motion attention are replaced by windowed attention (the paper's
conv variant, MultiConvAttention, is the same idea), which respects padding exactly.

Loss: SpanModel's (smoothed boundary CE + sequence matching) plus EAMAT's foreground loss, a masked
BCE on the foreground logits against "clip inside the GT moment" with positives weighted 2x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import field_validator, model_validator
from torch import Tensor, nn

from emtm.models.base import DataSpec, ModelConfig
from emtm.models.encoder import GroundingEncoder
from emtm.models.layers import (
    ConditionedPredictor,
    ContextQueryAttention,
    SequenceMatching,
    WeightedPool,
    masked_fill_padding,
)
from emtm.models.seqpan import attend, key_mask, merge_heads, split_heads
from emtm.models.student import SpanModel


class MaskedAttention(nn.Module):
    """Multi-head attention of x over y where `allowed` (broadcast to (B, H, Lx, Ly)) says who sees whom."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d ({d}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, y: Tensor, allowed: Tensor) -> Tensor:
        q = split_heads(self.q(x), self.n_heads)
        k, v = (split_heads(t, self.n_heads) for t in self.kv(y).chunk(2, -1))
        return self.out(merge_heads(attend(q, k, v, allowed, self.dropout)))


def feed_forward(d: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d)
    )


class EntityAwareLayer(nn.Module):
    """Pre-norm cross-modal layer: clips attend to clips and to words, words attend to clips; FFNs."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.norm_v, self.norm_q = nn.LayerNorm(d), nn.LayerNorm(d)
        self.frames = MaskedAttention(d, n_heads, dropout)  # cross-frame
        self.clips_to_words = MaskedAttention(d, n_heads, dropout)  # cross-modal
        self.words_to_clips = MaskedAttention(d, n_heads, dropout)
        self.ffn_v, self.ffn_q = feed_forward(d, dropout), feed_forward(d, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, video: Tensor, query: Tensor, v_mask: Tensor, q_mask: Tensor) -> tuple[Tensor, Tensor]:
        v, q = self.norm_v(video), self.norm_q(query)
        video = video + self.dropout(
            self.frames(v, v, key_mask(v_mask)) + self.clips_to_words(v, q, key_mask(q_mask))
        )
        query = query + self.dropout(self.words_to_clips(q, v, key_mask(v_mask)))
        video = video + self.dropout(self.ffn_v(video))
        query = query + self.dropout(self.ffn_q(query))
        return masked_fill_padding(video, v_mask), masked_fill_padding(query, q_mask)


def window_masks(length: int, windows: tuple[int, ...], n_heads: int, device: torch.device) -> Tensor:
    """(H, L, L) bool: head h sees the clips within windows[h % len(windows)] // 2 of itself."""
    pos = torch.arange(length, device=device)
    distance = (pos[:, None] - pos[None, :]).abs()
    radius = torch.tensor([windows[h % len(windows)] // 2 for h in range(n_heads)], device=device)
    return distance.unsqueeze(0) <= radius.view(-1, 1, 1)


class MotionAwareLayer(nn.Module):
    """Multi-scale temporal self-attention over clips, gated by the query, then a FFN."""

    def __init__(self, d: int, n_heads: int, windows: tuple[int, ...], dropout: float):
        super().__init__()
        self.n_heads, self.windows = n_heads, windows
        self.norm = nn.LayerNorm(d)
        self.attn = MaskedAttention(d, n_heads, dropout)
        self.condition = nn.Linear(d, d)
        self.ffn = feed_forward(d, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, query_vec: Tensor) -> Tensor:
        local = window_masks(x.shape[1], self.windows, self.n_heads, x.device).unsqueeze(0)  # (1, H, L, L)
        # valid clips see the valid clips in their window; padded rows see everything (they are zeroed)
        allowed = (local & key_mask(mask)) | ~mask[:, None, :, None]
        h = self.norm(x)
        gate = torch.sigmoid(self.condition(query_vec)).unsqueeze(1)  # (B, 1, d)
        x = x + self.dropout(gate * self.attn(h, h, allowed))
        x = x + self.dropout(self.ffn(x))
        return masked_fill_padding(x, mask)


class EAMATConfig(ModelConfig):
    d: int = 256
    dropout: float = 0.2
    n_heads: int = 8
    n_layers: int = 2
    windows: tuple[int, ...] = (3, 7, 15)
    char_dim: int = 50
    match_ext: int = 2
    match_weight: float = 1.0
    foreground_weight: float = 1.0

    @field_validator("windows")
    @classmethod
    def _odd_windows(cls, windows: tuple[int, ...]) -> tuple[int, ...]:
        if not windows or any(w < 1 or w % 2 == 0 for w in windows):
            raise ValueError(f"must be odd clip counts >= 1, got {windows}")
        return windows

    @model_validator(mode="after")
    def _heads_divide_width(self) -> EAMATConfig:
        if self.d % self.n_heads:
            raise ValueError(f"d ({self.d}) must be a multiple of n_heads ({self.n_heads})")
        return self


class EAMAT(SpanModel):
    Config = EAMATConfig
    output_form = "span"

    def __init__(self, config: EAMATConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        d, heads, p = config.d, config.n_heads, config.dropout
        self.encoder = GroundingEncoder(spec, d, p, config.char_dim)
        self.word_roles = nn.Linear(d, 2)  # entity / motion weight of each word
        self.entity_proj = nn.Linear(d, d)
        self.motion_proj = nn.Linear(d, d)
        self.entity_layers = nn.ModuleList(EntityAwareLayer(d, heads, p) for _ in range(config.n_layers))
        self.foreground = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, d // 2), nn.ReLU(), nn.Linear(d // 2, 1)
        )
        self.motion_cqa = ContextQueryAttention(d, p)
        self.motion_pool = WeightedPool(d)
        self.motion_layers = nn.ModuleList(
            MotionAwareLayer(d, heads, tuple(config.windows), p) for _ in range(config.n_layers)
        )
        self.fuse = nn.Linear(2 * d, d)
        self.matching = SequenceMatching(d)
        self.predictor = ConditionedPredictor(d, spec.max_video_len, heads, p)

    @property
    def match_embeddings(self) -> Tensor:
        return self.matching.label_embeddings

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        enc = self.encoder(batch)
        v_mask, q_mask = enc.video_mask, enc.query_mask
        entity_w, motion_w = torch.softmax(self.word_roles(enc.query), -1).unsqueeze(-1).unbind(-2)

        # entity-aware stage: which clips show what the query talks about
        video = enc.video
        query = masked_fill_padding(enc.query + entity_w * self.entity_proj(enc.query), q_mask)
        for layer in self.entity_layers:
            video, query = layer(video, query, v_mask, q_mask)
        foreground_logits = self.foreground(video).squeeze(-1)

        # motion-aware stage: on the foreground clips, with the motion words, at several temporal scales
        motion_query = masked_fill_padding(query + motion_w * self.motion_proj(query), q_mask)
        motion = enc.video * torch.sigmoid(foreground_logits).unsqueeze(-1)
        motion = self.motion_cqa(motion, motion_query, v_mask, q_mask)
        query_vec = self.motion_pool(motion_query, q_mask)
        for layer in self.motion_layers:
            motion = layer(motion, v_mask, query_vec)

        fused = masked_fill_padding(self.fuse(torch.cat([video, motion], -1)), v_mask)
        fused, match_logits = self.matching(fused, v_mask)
        start_logits, end_logits = self.predictor(fused, v_mask)
        return {
            "start_logits": start_logits,
            "end_logits": end_logits,
            "match_logits": match_logits,
            "foreground_logits": foreground_logits,
        }

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        total, parts = super().loss(outputs, batch)
        mask = batch["video_mask"]
        positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
        inside = (positions >= batch["start_index"].unsqueeze(1)) & (
            positions <= batch["end_index"].unsqueeze(1)
        )
        target = (inside & mask).to(torch.float32)
        bce = F.binary_cross_entropy_with_logits(
            outputs["foreground_logits"].float(), target, weight=1.0 + target, reduction="none"
        )
        foreground = ((bce * mask).sum(1) / mask.sum(1).clamp_min(1)).mean()
        parts["foreground"] = foreground.item()
        return total + self.config.foreground_weight * foreground, parts
