"""The contract every grounding model follows, so one engine trains and evaluates them all."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from emtm.errors import EmtmError


class ModelConfig(BaseModel):
    """Base for each model's own config. Unknown keys are an error, caught once at the edge."""

    model_config = ConfigDict(extra="forbid")


OUTPUT_FORMS = ("span", "2dmap", "proposals", "regression")


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
    """A model maps a batch to outputs, outputs to a loss, and outputs to ranked windows.

    As a teacher, `teacher_outputs` gives its native output in one of the forms of `OUTPUT_FORMS`
    (see emtm.distill.unify, which turns each form into start/end distributions on the student grid):

    * "span": start_logits, end_logits (B, L) on the batch's clip grid (video_mask);
    * "2dmap": map_scores (B, N, N) in [0, 1] or logits, map_mask (B, N, N) bool; cell (i, j) is the
      moment [i/N, (j+1)/N] of the video's valid length;
    * "proposals": windows (B, K, 2) as fractions of the video, scores (B, K) >= 0, best first;
    * "regression": window (B, 2) as fractions of the video.
    """

    Config: type[ModelConfig] = ModelConfig
    output_form: str = "span"

    def teacher_outputs(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise EmtmError(
            f"model {type(self).__name__} has no teacher outputs; use a teacher model (see README)"
        )

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

    def fit_inputs(self, train_dataset: object, progress: bool = False) -> None:
        """Hook for models that read statistics of the training features before training (a
        GroundingDataset: .samples, .store, .cfg), e.g. the student's input standardisation."""
        encoder = getattr(self, "encoder", None)
        if hasattr(encoder, "fit_inputs"):
            encoder.fit_inputs(train_dataset, progress)

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def spans_to_fractions(spans: Tensor, video_mask: Tensor) -> Tensor:
    """(B, k, 2) inclusive clip indices -> [start, end) fractions of each video's valid length."""
    n_valid = video_mask.sum(1).clamp_min(1).to(torch.float32).view(-1, 1, 1)
    edges = torch.stack([spans[..., 0], spans[..., 1] + 1], dim=-1)  # no host tensor: CUDA-graph safe
    return edges.to(torch.float32) / n_valid
