"""The student's encoder: embeddings, projections and the conv encoder shared by video and query.

It is its own module so that the isomorphic teacher of EMTM can share it with the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from emtm.models.base import DataSpec
from emtm.models.layers import CharCNN, ConvBlock, PositionalEmbedding, WordEmbedding, zero_padding_


@dataclass
class Encoded:
    video: Tensor  # (B, L, d)
    query: Tensor  # (B, N, d)
    video_mask: Tensor  # (B, L) bool
    query_mask: Tensor  # (B, N) bool


class GroundingEncoder(nn.Module):
    """Word vectors + char-CNN -> d for the query, linear -> d for the video, then one shared conv encoder."""

    def __init__(self, spec: DataSpec, d: int, dropout: float, char_dim: int = 50, n_conv: int = 4):
        super().__init__()
        self.words = WordEmbedding(spec.word_vectors)
        self.chars = CharCNN(spec.n_chars, char_dim)
        self.word_dropout = nn.Dropout(dropout)
        self.query_proj = nn.Sequential(nn.Linear(self.words.dim + self.chars.out_dim, d), nn.LayerNorm(d))
        self.video_proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(spec.video_dim, d), nn.LayerNorm(d))
        max_len = max(spec.max_video_len, spec.max_query_len)
        self.pos = PositionalEmbedding(d, max_len)
        self.conv = ConvBlock(d, n_conv, 7, dropout)

    def encode_query(self, words: Tensor, chars: Tensor, query_mask: Tensor) -> Tensor:
        x = torch.cat([self.word_dropout(self.words(words)), self.chars(chars)], -1)
        return self.shared(self.query_proj(x), query_mask)

    def encode_video(self, video: Tensor, video_mask: Tensor) -> Tensor:
        return self.shared(self.video_proj(video), video_mask)

    def shared(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.conv(zero_padding_(self.pos(x), mask), mask)

    def forward(self, batch: dict[str, Tensor]) -> Encoded:
        return Encoded(
            video=self.encode_video(batch["video"], batch["video_mask"]),
            query=self.encode_query(batch["words"], batch["chars"], batch["query_mask"]),
            video_mask=batch["video_mask"],
            query_mask=batch["query_mask"],
        )
