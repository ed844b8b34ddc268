"""The contract every grounding model follows, so one engine trains and evaluates them all."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class ModelConfig(BaseModel):
    """Base for each model's own config. Unknown keys are an error, caught once at the edge."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data it will see."""

    video_dim: int
    max_video_len: int
    word_vectors: Tensor  # (vocab, word_dim) rows of the run's vocabulary; PAD and UNK rows are zero
    n_chars: int
    max_query_len: int = 30


@dataclass
class Predictions:
    """Top-k windows as fractions of the video ([0, 1]), best first, and their scores."""

    windows: Tensor  # (B, k, 2)
    scores: Tensor  # (B, k)


class GroundingModel(nn.Module):
    """A model maps a batch to outputs, outputs to a loss, and outputs to ranked windows."""

    Config: type[ModelConfig] = ModelConfig

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError  # pragma: no cover - interface

    def predict(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor], top_k: int = 5, **decode: object
    ) -> Predictions:
        raise NotImplementedError  # pragma: no cover - interface

    def fit_prior(self, train_samples: list) -> None:
        """Hook for models that read statistics of the training set before training (e.g. the prior)."""

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def spans_to_fractions(spans: Tensor, video_mask: Tensor) -> Tensor:
    """(B, k, 2) inclusive clip indices -> [start, end) fractions of each video's valid length."""
    n_valid = video_mask.sum(1).clamp_min(1).to(torch.float32).view(-1, 1, 1)
    offsets = torch.tensor([0.0, 1.0], device=spans.device)
    return (spans.to(torch.float32) + offsets) / n_valid
