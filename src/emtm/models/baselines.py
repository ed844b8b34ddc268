"""Two trivial baselines that any real model must beat by far.

* `prior`: always predicts the average moment (mean start and end as fractions of the video).
* `meanpool`: mean-pooled video and query vectors -> MLP -> (center, width), an L1 + IoU regressor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emtm.models.base import DataSpec, GroundingModel, ModelConfig, Predictions
from emtm.models.layers import WordEmbedding, masked_mean


class PriorConfig(ModelConfig):
    pass


class Prior(GroundingModel):
    """No learning: the mean training moment, in fractions of the video length."""

    Config = PriorConfig

    def __init__(self, config: PriorConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.tensor([0.0, 1.0]))

    def fit_prior(self, train_samples: list) -> None:
        fractions = torch.tensor([[s.start / s.duration, s.end / s.duration] for s in train_samples])
        self.window.copy_(fractions.mean(0))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"window": self.window.expand(batch["video"].shape[0], 2)}

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        return outputs["window"].sum() * 0.0, {}

    def predict(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor], top_k: int = 5, **_: object
    ) -> Predictions:
        window = outputs["window"].unsqueeze(1)
        return Predictions(window, torch.ones(window.shape[:2], device=window.device))


class MeanPoolConfig(ModelConfig):
    d: int = 128
    dropout: float = 0.1


def window_iou(pred: Tensor, target: Tensor) -> Tensor:
    inter = (torch.minimum(pred[:, 1], target[:, 1]) - torch.maximum(pred[:, 0], target[:, 0])).clamp_min(0)
    union = torch.maximum(pred[:, 1], target[:, 1]) - torch.minimum(pred[:, 0], target[:, 0])
    return inter / union.clamp_min(1e-6)


def window_regression_loss(window: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """L1 + (1 - IoU) of predicted [start, end] fractions against the annotated ones, batch mean."""
    target = torch.stack([batch["start_frac"], batch["end_frac"]], -1)
    window = window.float()
    l1 = F.l1_loss(window, target)
    iou = (1 - window_iou(window, target)).mean()
    return l1 + iou, {"l1": l1.item(), "iou": iou.item()}


class MeanPoolRegressor(GroundingModel):
    """Order-free baseline: it sees the average clip and the average word, nothing in between."""

    Config = MeanPoolConfig

    def __init__(self, config: MeanPoolConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        self.words = WordEmbedding(spec.word_vectors)
        d = config.d
        self.video_proj = nn.Linear(spec.video_dim, d)
        self.query_proj = nn.Linear(self.words.dim, d)
        self.mlp = nn.Sequential(
            nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 2)
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        video = masked_mean(self.video_proj(batch["video"]), batch["video_mask"])
        query = masked_mean(self.query_proj(self.words(batch["words"])), batch["query_mask"])
        center, width = torch.sigmoid(self.mlp(torch.cat([video, query], -1))).unbind(-1)
        window = torch.stack([center - width / 2, center + width / 2], -1).clamp(0.0, 1.0)
        return {"window": window}

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        return window_regression_loss(outputs["window"], batch)

    def predict(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor], top_k: int = 5, **_: object
    ) -> Predictions:
        window = outputs["window"].float().unsqueeze(1)
        return Predictions(window, torch.ones(window.shape[:2], device=window.device))
