"""A regression teacher: one (start, end) window straight from pooled cross-modal features.

encoder -> context-query attention -> query concat -> conv block -> attention pooling over valid clips
        -> MLP -> sigmoid (center, width) -> [c - w/2, c + w/2] clamped to [0, 1]

Loss: L1 + (1 - IoU) against (start_frac, end_frac), as the meanpool baseline. Unlike meanpool it sees
the clips in order and fused with the query before pooling. The width is kept >= `min_width` so that a
window never collapses to a point (start < end always).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emtm.models.base import DataSpec, GroundingModel, ModelConfig, Predictions
from emtm.models.baselines import window_regression_loss
from emtm.models.encoder import GroundingEncoder
from emtm.models.layers import ContextQueryAttention, ConvBlock, QueryConcat, WeightedPool


class RegressConfig(ModelConfig):
    d: int = 128
    dropout: float = 0.2
    char_dim: int = 50
    n_conv: int = 4
    min_width: float = 0.01


class Regressor(GroundingModel):
    Config = RegressConfig
    output_form = "regression"

    def __init__(self, config: RegressConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        d = config.d
        self.encoder = GroundingEncoder(spec, d, config.dropout, config.char_dim)
        self.cq_attention = ContextQueryAttention(d, config.dropout)
        self.cq_concat = QueryConcat(d)
        self.conv = ConvBlock(d, config.n_conv, 7, config.dropout)
        self.pool = WeightedPool(d)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(d, 2))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        enc = self.encoder(batch)
        v_mask, q_mask = enc.video_mask, enc.query_mask
        fused = self.cq_attention(enc.video, enc.query, v_mask, q_mask)
        fused = self.conv(self.cq_concat(fused, enc.query, v_mask, q_mask), v_mask)
        center, width = torch.sigmoid(self.mlp(self.pool(fused, v_mask))).unbind(-1)
        width = self.config.min_width + (1.0 - self.config.min_width) * width
        window = torch.stack([center - width / 2, center + width / 2], -1).clamp(0.0, 1.0)
        return {"window": window}

    def teacher_outputs(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"window": outputs["window"]}

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        return window_regression_loss(outputs["window"], batch)

    def predict(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor], top_k: int = 5, **_: object
    ) -> Predictions:
        """One window per query (k = 1) whatever `top_k` asks for; its score is 1."""
        window = outputs["window"].float().unsqueeze(1)
        return Predictions(window, torch.ones(window.shape[:2], device=window.device))
