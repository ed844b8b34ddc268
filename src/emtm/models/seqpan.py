"""SeqPAN (Zhang et al., ACL Findings 2021), a heavy span teacher: the student plus the dual-attention stack.

encoder -> n_dual x DualAttentionBlock (video and query) -> SpanHead (CQA, query concat, matching, predictor)

The dual attention follows SeqPAN's code (`dual_multihead_attention` / `dual_attn_block`): one query
projection of a sequence attends to the sequence itself (self) and to the other modality (cross); each
branch's output is gated by a sigmoid of the other branch's (cross-gating); a guided dense layer and a
bilinear sigmoid gate against the block input give the update; residual, LayerNorm, feed-forward. The same
weights update the video (attending to the query) and the query (attending to the video), as in SeqPAN.
Deviation: the feed-forward is Linear-ReLU-Linear (the project's FFN) where SeqPAN has a single dense layer.

Width: the defaults are d = 256 ("full width"), twice the student's 128. At d = 128 the two dual blocks
make SeqPAN only ~2x the student's FLOPs; at d = 256 it is > 5x (see tests/test_teachers_span.py), which is
what a heavy teacher for distillation should be. SeqPAN's own released configs use d = 128.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn

from emtm.models.base import DataSpec, ModelConfig
from emtm.models.encoder import GroundingEncoder
from emtm.models.layers import add_residual, zero_padding_
from emtm.models.student import SpanHead, SpanModel


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, L, d) -> (B, H, L, d / H)."""
    b, length, d = x.shape
    return x.view(b, length, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, d / H) -> (B, L, d)."""
    b, h, length, dh = x.shape
    return x.transpose(1, 2).reshape(b, length, h * dh)


def attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, dropout: nn.Module) -> Tensor:
    """Scaled dot-product attention over heads; `allowed` (bool, broadcast to (B, H, Lq, Lk)) marks the
    keys each query may see. Every row needs at least one allowed key."""
    p = dropout.p if dropout.training else 0.0
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)


def key_mask(mask: Tensor) -> Tensor:
    """(B, L) valid positions -> (B, 1, 1, L): every query may see every valid key."""
    return mask[:, None, None, :]


class DualMultiheadAttention(nn.Module):
    """Self- and cross-attention from one query projection, cross-gated, then a bilinear output gate."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d ({d}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.query = nn.Linear(d, d)
        self.self_kv = nn.Linear(d, 2 * d)  # keys and values of the sequence itself
        self.cross_kv = nn.Linear(d, 2 * d)  # keys and values of the other modality
        self.self_out = nn.Linear(d, d)
        self.cross_out = nn.Linear(d, d)
        self.self_gate = nn.Linear(d, d)
        self.cross_gate = nn.Linear(d, d)
        self.guided = nn.Linear(d, d)
        self.gate_scores = nn.Linear(2 * d, d)  # W1 x + W2 h + b, SeqPAN's "bilinear"
        self.gate_values = nn.Linear(2 * d, d)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, other: Tensor, x_mask: Tensor, other_mask: Tensor) -> Tensor:
        q = split_heads(self.query(x), self.n_heads)
        k_self, v_self = (split_heads(t, self.n_heads) for t in self.self_kv(x).chunk(2, -1))
        k_cross, v_cross = (split_heads(t, self.n_heads) for t in self.cross_kv(other).chunk(2, -1))
        s = self.self_out(merge_heads(attend(q, k_self, v_self, key_mask(x_mask), self.attn_dropout)))
        c = self.cross_out(merge_heads(attend(q, k_cross, v_cross, key_mask(other_mask), self.attn_dropout)))
        gated = torch.sigmoid(self.self_gate(s)) * c + torch.sigmoid(self.cross_gate(c)) * s  # cross-gating
        both = torch.cat([x, self.guided(gated)], -1)
        return zero_padding_(torch.sigmoid(self.gate_scores(both)) * self.gate_values(both), x_mask)


class DualAttentionBlock(nn.Module):
    """One SeqPAN dual-attention layer: updates the video and the query, each attending to both.

    forward(video, query, video_mask, query_mask) -> (video, query); padded positions come out zero.
    """

    def __init__(self, d: int, n_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.norm_x = nn.LayerNorm(d)
        self.norm_other = nn.LayerNorm(d)
        self.attn = DualMultiheadAttention(d, n_heads, dropout)
        self.dense = nn.Linear(d, d)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(d, d))
        self.dropout = nn.Dropout(dropout)

    def update(self, x: Tensor, other: Tensor, x_mask: Tensor, other_mask: Tensor) -> Tensor:
        h = self.attn(self.norm_x(x), self.norm_other(other), x_mask, other_mask)
        x = add_residual(x, self.dropout(self.dense(h)))
        x = add_residual(x, self.dropout(self.ffn(self.norm_ffn(x))))
        return zero_padding_(x, x_mask)

    def forward(self, video: Tensor, query: Tensor, v_mask: Tensor, q_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.update(video, query, v_mask, q_mask), self.update(query, video, q_mask, v_mask)


class SeqPANConfig(ModelConfig):
    d: int = 256
    dropout: float = 0.2
    n_heads: int = 8
    n_dual: int = 2
    char_dim: int = 50
    match_ext: int = 2
    match_weight: float = 1.0

    @model_validator(mode="after")
    def _heads_divide_width(self) -> SeqPANConfig:
        if self.d % self.n_heads:
            raise ValueError(f"d ({self.d}) must be a multiple of n_heads ({self.n_heads})")
        return self


class SeqPAN(SpanModel):
    Config = SeqPANConfig
    output_form = "span"

    def __init__(self, config: SeqPANConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        self.encoder = GroundingEncoder(spec, config.d, config.dropout, config.char_dim)
        self.dual = nn.ModuleList(
            DualAttentionBlock(config.d, config.n_heads, config.dropout) for _ in range(config.n_dual)
        )
        self.head = SpanHead(config.d, spec.max_video_len, config.n_heads, config.dropout)

    @property
    def match_embeddings(self) -> Tensor:
        return self.head.matching.label_embeddings

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        enc = self.encoder(batch)
        video, query = enc.video, enc.query
        for block in self.dual:
            video, query = block(video, query, enc.video_mask, enc.query_mask)
        return self.head(video, query, enc.video_mask, enc.query_mask)
