"""`bigru`: a plain recurrent grounding model, the bar any student must clear.

GloVe words -> BiGRU -> mean pool: one query vector q. Clips: LayerNorm -> Linear -> v. Every clip is
fused with the query before any temporal layer, [v, q, v*q, v-q] -> Linear -> ReLU, so the sentence
cannot be bypassed; a BiGRU over the fused clips; Linear -> start/end logits; cross-entropy against
the smoothed boundaries; the best span with start <= end. Sequences are packed, so padding a sample in a
batch changes none of its outputs.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emtm.models.base import DataSpec, ModelConfig
from emtm.models.layers import WordEmbedding, fusion_features, masked_mean
from emtm.models.losses import boundary_loss
from emtm.models.student import SpanModel


class BiGRUConfig(ModelConfig):
    d: int = 128
    dropout: float = 0.1


def run_gru(gru: nn.GRU, x: Tensor, mask: Tensor) -> Tensor:
    """A bidirectional GRU over the valid prefix of each row; padded positions come out as zeros."""
    lengths = mask.sum(1).clamp_min(1).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = gru(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


class BiGRU(SpanModel):
    """Span outputs, decoding and teacher outputs as every span model (`SpanModel`); its own loss."""

    Config = BiGRUConfig
    config: BiGRUConfig  # type: ignore[assignment]

    def __init__(self, config: BiGRUConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        d = config.d
        self.words = WordEmbedding(spec.word_vectors)
        self.query_gru = nn.GRU(self.words.dim, d // 2, batch_first=True, bidirectional=True)
        self.video_proj = nn.Sequential(nn.LayerNorm(spec.video_dim), nn.Linear(spec.video_dim, d))
        self.fuse = nn.Sequential(nn.Linear(4 * d, d), nn.ReLU(), nn.Dropout(config.dropout))
        self.video_gru = nn.GRU(d, d // 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(d, 2)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        q_mask, v_mask = batch["query_mask"], batch["video_mask"]
        query = masked_mean(run_gru(self.query_gru, self.words(batch["words"]), q_mask), q_mask)
        v = self.video_proj(batch["video"])
        fused = self.fuse(fusion_features(v, query))
        start_logits, end_logits = self.out(run_gru(self.video_gru, fused, v_mask)).unbind(-1)
        return {"start_logits": start_logits, "end_logits": end_logits}

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        loc = boundary_loss(outputs["start_logits"], outputs["end_logits"], batch)
        return loc, {"loc": loc.item()}
