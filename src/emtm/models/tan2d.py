"""A 2D-TAN / MMN-like teacher: a 2D map of candidate moments scored against the sentence.

shared encoder -> each sample's valid clips pooled into N bins -> moment map, cell (i, j) = max of
bins i..j for j >= i, j - i < max_span (plus its first and last bin: max-pooling forgets the order
inside a moment) -> 1x1 conv, Hadamard product with the pooled sentence, L2-normalised over channels
(2D-TAN), plus a learned embedding per cell (where the moment is and how long) -> residual stack of
LayerNorm -> 2D conv -> ReLU, the map mask re-applied after each -> 1x1 conv: one logit per cell.

Cell (i, j) is the moment [i/N, (j+1)/N] of the video's valid length. The bins depend only on a
sample's valid clips, so the map, and everything after it, does not depend on padding.

Loss (2D-TAN): BCE of each valid cell's logit against its scaled IoU with the GT window,
y = clamp((iou - min_iou) / (max_iou - min_iou), 0, 1), averaged over the valid cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from emtm.models.base import DataSpec, GroundingModel, ModelConfig, Predictions
from emtm.models.encoder import GroundingEncoder
from emtm.models.layers import WeightedPool
from emtm.models.proposals import rank_proposals


class Tan2dConfig(ModelConfig):
    d: int = Field(128, ge=1)
    d_map: int = Field(256, ge=1, description="channels of the 2D map convolutions")
    n_bins: int = Field(32, ge=1, description="N: the map is N x N")
    max_span: int | None = Field(None, ge=1, description="longest moment, in bins; None: N")
    n_layers: int = Field(4, ge=1)
    kernel_size: int = Field(5, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    char_dim: int = Field(50, ge=1)
    min_iou: float = Field(0.5, ge=0, lt=1)
    max_iou: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> Tan2dConfig:
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        if self.min_iou >= self.max_iou:
            raise ValueError("min_iou must be below max_iou")
        return self


def bin_pooling_weights(mask: Tensor, n_bins: int) -> Tensor:
    """(B, N, L) adaptive average pooling of each sample's valid clips into N bins.

    Bin k averages the clips [floor(k n / N), ceil((k + 1) n / N)) of a sample with n valid clips; with
    n < N the bins repeat clips, so every sample gets exactly N bins. Padding has weight 0.
    """
    n_valid = mask.sum(1).clamp_min(1).view(-1, 1, 1)  # (B, 1, 1)
    k = torch.arange(n_bins, device=mask.device).view(1, -1, 1)
    first = k * n_valid // n_bins
    stop = ((k + 1) * n_valid + n_bins - 1) // n_bins
    positions = torch.arange(mask.shape[1], device=mask.device).view(1, 1, -1)
    inside = (positions >= first) & (positions < stop)
    return inside / (stop - first).to(torch.float32)


def moment_map(bins: Tensor, max_span: int) -> Tensor:
    """(B, N, d) bins -> (B, d, N, N) map: cell (i, j) = max of bins i..j; zero if j < i or j - i >= max_span.

    Built diagonal by diagonal as 2D-TAN does: the max over i..i+k is the max over i..i+k-1 and bin i+k.
    """
    b, n, d = bins.shape
    cells = bins.new_zeros(b, n, n, d)
    running = bins
    diagonal = torch.arange(n, device=bins.device)
    cells[:, diagonal, diagonal] = bins
    for offset in range(1, min(max_span, n)):
        running = torch.maximum(running[:, :-1], bins[:, offset:])  # (B, N - offset, d)
        rows = diagonal[: n - offset]
        cells[:, rows, rows + offset] = running
    return cells.permute(0, 3, 1, 2)


def cell_iou(n_bins: int, gt_window: Tensor) -> Tensor:
    """(B, N, N) IoU of each cell's moment [i/N, (j+1)/N] with the GT (B, 2) fractions (j < i: 0)."""
    edges = torch.arange(n_bins + 1, device=gt_window.device, dtype=torch.float32) / n_bins
    cell_start = edges[:-1].view(1, -1, 1)
    cell_end = edges[1:].view(1, 1, -1)
    gt_start, gt_end = gt_window[:, 0].view(-1, 1, 1), gt_window[:, 1].view(-1, 1, 1)
    inter = (torch.minimum(cell_end, gt_end) - torch.maximum(cell_start, gt_start)).clamp_min(0)
    union = torch.maximum(cell_end, gt_end) - torch.minimum(cell_start, gt_start)
    upper = torch.ones(n_bins, n_bins, dtype=torch.bool, device=gt_window.device).triu()
    return (inter / union.clamp_min(1e-6)) * upper


def scaled_iou_targets(iou: Tensor, min_iou: float, max_iou: float) -> Tensor:
    return ((iou - min_iou) / (max_iou - min_iou)).clamp(0.0, 1.0)


class Tan2d(GroundingModel):
    Config = Tan2dConfig
    output_form = "2dmap"

    def __init__(self, config: Tan2dConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        n, d, d_map = config.n_bins, config.d, config.d_map
        self.max_span = min(config.max_span or n, n)
        self.encoder = GroundingEncoder(spec, d, config.dropout, config.char_dim)
        self.sentence_pool = WeightedPool(d)
        self.map_proj = nn.Conv2d(d, d_map, 1)
        self.start_proj = nn.Linear(d, d_map, bias=False)
        self.end_proj = nn.Linear(d, d_map, bias=False)
        self.sentence_proj = nn.Linear(d, d_map)
        self.map_convs = nn.ModuleList(
            nn.Conv2d(d_map, d_map, config.kernel_size, padding=config.kernel_size // 2)
            for _ in range(config.n_layers)
        )
        self.map_norms = nn.ModuleList(nn.LayerNorm(d_map) for _ in range(config.n_layers))
        self.dropout = nn.Dropout(config.dropout)
        self.score = nn.Conv2d(d_map, 1, 1)
        self.cell_position = nn.Parameter(torch.zeros(d_map, n, n))
        offset = torch.arange(n).view(1, -1) - torch.arange(n).view(-1, 1)  # [i, j] = j - i
        self.register_buffer("cell_mask", (offset >= 0) & (offset < self.max_span), persistent=False)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        enc = self.encoder(batch)
        weights = bin_pooling_weights(enc.video_mask, self.config.n_bins).to(enc.video.dtype)
        bins = weights @ enc.video  # (B, N, d)
        sentence = self.sentence_proj(self.sentence_pool(enc.query, enc.query_mask))  # (B, d_map)

        mask = self.cell_mask.to(bins.dtype)  # (N, N)
        cells = self.map_proj(moment_map(bins, self.max_span))  # (B, d_map, N, N)
        first_bin = self.start_proj(bins).transpose(1, 2)[:, :, :, None]  # bin i of cell (i, j)
        last_bin = self.end_proj(bins).transpose(1, 2)[:, :, None, :]  # bin j of cell (i, j)
        fused = (cells + first_bin + last_bin) * sentence[:, :, None, None]
        x = F.normalize(fused, dim=1) * self.config.d_map**0.5  # unit norm, scaled to unit variance
        x = (x + self.cell_position) * mask
        for norm, conv in zip(self.map_norms, self.map_convs):
            h = norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * mask  # LayerNorm over channels
            x = x + self.dropout(F.relu(conv(h))) * mask
        logits = self.score(x).squeeze(1)  # (B, N, N)
        return {"map_logits": logits.masked_fill(~self.cell_mask, 0.0)}

    def map_mask(self, batch_size: int) -> Tensor:
        return self.cell_mask.expand(batch_size, -1, -1)

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits = outputs["map_logits"].float()
        gt_window = torch.stack([batch["start_frac"], batch["end_frac"]], -1).float()
        iou = cell_iou(self.config.n_bins, gt_window)
        targets = scaled_iou_targets(iou, self.config.min_iou, self.config.max_iou)
        mask = self.map_mask(logits.shape[0]).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        loss = (bce * mask).sum() / mask.sum()
        return loss, {"bce": loss.item()}

    def predict(
        self,
        outputs: dict[str, Tensor],
        batch: dict[str, Tensor],
        top_k: int = 5,
        max_len: int | None = None,
        nms_iou: float | None = 0.5,
    ) -> Predictions:
        """Valid cells by sigmoid score, NMS, top_k windows [i/N, (j+1)/N].

        max_len (clips of the batch grid) drops cells longer than max_len clips of the sample; a
        single bin always stays allowed.
        """
        n = self.config.n_bins
        scores = torch.sigmoid(outputs["map_logits"].float())  # (B, N, N)
        alive = self.map_mask(scores.shape[0])
        rows = torch.arange(n, device=scores.device)
        starts, ends = rows.view(1, -1, 1).expand_as(scores), rows.view(1, 1, -1).expand_as(scores)
        if max_len is not None:
            n_valid = batch["video_mask"].sum(1).view(-1, 1, 1)
            n_cells = ends - starts + 1
            alive = alive & ((n_cells * n_valid <= max_len * n) | (n_cells == 1))
        starts, ends, scores = rank_proposals(
            starts.flatten(1), ends.flatten(1), scores.flatten(1), alive.flatten(1), top_k, nms_iou
        )
        return Predictions(torch.stack([starts / n, (ends + 1) / n], -1).float(), scores)

    def teacher_outputs(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        mask = self.map_mask(outputs["map_logits"].shape[0])
        return {"map_scores": torch.sigmoid(outputs["map_logits"].float()) * mask, "map_mask": mask}
