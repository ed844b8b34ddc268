"""The student's encoder: embeddings, projections and the conv encoder shared by video and query.

It is its own module so that the isomorphic teacher of EMTM can share it with the student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from emtm.models.base import DataSpec
from emtm.models.layers import CharCNN, ConvBlock, PositionalEmbedding, WordEmbedding, zero_padding_

VIDEO_NORMS = ("none", "standardize")


@dataclass
class Encoded:
    video: Tensor  # (B, L, d)
    query: Tensor  # (B, N, d)
    video_mask: Tensor  # (B, L) bool
    query_mask: Tensor  # (B, N) bool


class GroundingEncoder(nn.Module):
    """Word vectors + char-CNN -> d for the query, linear -> d for the video, then one shared conv encoder.

    video_norm "standardize": each feature dimension is first standardised with the mean and std of the
    training clips (`fit_inputs`, stored with the weights as video_mean / video_std), so that features
    with a large shared positive mean (real I3D: any two clips at cosine ~0.8) reach the linear layer
    centred (the student's default, StudentConfig). "none" (this class's default, the teachers'): the
    features as they are; the LayerNorm after the linear layer makes the encoder invariant to their
    overall scale, not to a shared offset.
    """

    def __init__(
        self,
        spec: DataSpec,
        d: int,
        dropout: float,
        char_dim: int = 50,
        n_conv: int = 4,
        video_norm: str = "none",
        word_dropout: float | None = None,
        kernel_size: int = 7,
        positions: str = "absolute",
    ):
        """`char_dim` 0: words only, no char-CNN. `word_dropout` None: `dropout`. `kernel_size`: the
        width of each of the `n_conv` depthwise convolutions (each sees +-kernel_size // 2 clips)."""
        super().__init__()
        if video_norm not in VIDEO_NORMS:
            raise ValueError(f"video_norm must be one of {', '.join(VIDEO_NORMS)}, got {video_norm!r}")
        self.video_norm = video_norm
        if video_norm == "standardize":
            self.register_buffer("video_mean", torch.zeros(spec.video_dim))
            self.register_buffer("video_std", torch.ones(spec.video_dim))
        self.words = WordEmbedding(spec.word_vectors)
        self.chars = CharCNN(spec.n_chars, char_dim) if char_dim else None
        self.word_dropout = nn.Dropout(dropout if word_dropout is None else word_dropout)
        query_dim = self.words.dim + (self.chars.out_dim if self.chars else 0)
        self.query_proj = nn.Sequential(nn.Linear(query_dim, d), nn.LayerNorm(d))
        self.video_proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(spec.video_dim, d), nn.LayerNorm(d))
        max_len = max(spec.max_video_len, spec.max_query_len)
        self.pos = PositionalEmbedding(d, max_len, positions)
        self.conv = ConvBlock(d, n_conv, kernel_size, dropout)

    def embed_query(self, words: Tensor, chars: Tensor) -> Tensor:
        x = self.word_dropout(self.words(words))
        if self.chars is not None:
            x = torch.cat([x, self.chars(chars)], -1)
        return self.query_proj(x)

    def encode_query(self, words: Tensor, chars: Tensor, query_mask: Tensor) -> Tensor:
        return self.shared(self.embed_query(words, chars), query_mask)

    def fit_inputs(self, dataset: Any, progress: bool = False) -> None:
        """With video_norm "standardize": set video_mean / video_std from the clips of the training
        set (`emtm.data.stats.clip_mean_std` of a GroundingDataset: every video once, resampled as
        the model sees it; `progress`: a progress bar over the videos)."""
        if self.video_norm != "standardize":
            return
        from emtm.data.stats import clip_mean_std

        ids = sorted({s.video_id for s in dataset.samples})
        mean, std = clip_mean_std(dataset.store, ids, dataset.cfg.max_video_len, progress)
        self.video_mean.copy_(torch.from_numpy(mean))
        self.video_std.copy_(torch.from_numpy(std))

    def normalize_video(self, video: Tensor) -> Tensor:
        if self.video_norm == "standardize":
            return (video - self.video_mean) / self.video_std
        return video

    def encode_video(self, video: Tensor, video_mask: Tensor) -> Tensor:
        return self.shared(self.video_proj(self.normalize_video(video)), video_mask)

    def shared(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.conv(zero_padding_(self.pos(x, mask), mask), mask)

    def encode_pair(
        self, video: Tensor, video_mask: Tensor, words: Tensor, chars: Tensor, query_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`encode_video` and `encode_query` of B videos and B queries in one pass of the shared conv
        encoder, used under torch.compile: each query and its video side by side in one sequence,
        [query | gap | video], the gap as wide as the convolution reaches (masked, so zero before
        every convolution: no position sees the other side). The same maths, half the kernel launches
        of the shared encoder (at batch 1 the student's latency is the number of its kernels)."""
        query = zero_padding_(self.pos(self.embed_query(words, chars), query_mask), query_mask)
        clips = zero_padding_(self.pos(self.video_proj(self.normalize_video(video)), video_mask), video_mask)
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
