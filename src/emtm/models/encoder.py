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

    def embed_query(self, words: Tensor, chars: Tensor) -> Tensor:
        x = torch.cat([self.word_dropout(self.words(words)), self.chars(chars)], -1)
        return self.query_proj(x)

    def encode_query(self, words: Tensor, chars: Tensor, query_mask: Tensor) -> Tensor:
        return self.shared(self.embed_query(words, chars), query_mask)

    def encode_video(self, video: Tensor, video_mask: Tensor) -> Tensor:
        return self.shared(self.video_proj(video), video_mask)

    def shared(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.conv(zero_padding_(self.pos(x), mask), mask)

    def encode_pair(
        self, video: Tensor, video_mask: Tensor, words: Tensor, chars: Tensor, query_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`encode_video` and `encode_query` of B videos and B queries in one pass of the shared conv
        encoder, used under torch.compile: each query and its video side by side in one sequence,
        [query | gap | video], the gap as wide as the convolution reaches (masked, so zero before
        every convolution: no position sees the other side). The same maths, half the kernel launches
        of the shared encoder (at batch 1 the student's latency is the number of its kernels)."""
        query = zero_padding_(self.pos(self.embed_query(words, chars)), query_mask)
        clips = zero_padding_(self.pos(self.video_proj(video)), video_mask)
        batch, n_words, d = query.shape
        gap = self.conv.convs[0].depthwise.kernel_size[0] // 2
        x = torch.cat([query, query.new_zeros(batch, gap, d), clips], 1)
        mask = torch.cat([query_mask, query_mask.new_zeros(batch, gap), video_mask], 1)
        x = self.conv(x, mask)
        return x[:, n_words + gap :], x[:, :n_words]

    def forward(self, batch: dict[str, Tensor]) -> Encoded:
        inputs = (batch["video"], batch["video_mask"], batch["words"], batch["chars"], batch["query_mask"])
        if torch.compiler.is_compiling():
            video, query = self.encode_pair(*inputs)
        else:
            video, query = self.encode_video(*inputs[:2]), self.encode_query(*inputs[2:])
        return Encoded(
            video=video, query=query, video_mask=batch["video_mask"], query_mask=batch["query_mask"]
        )
