"""The EMTM student: SeqPAN without its dual-attention stack (emtm-method.md §2).

shared encoder -> context-query attention -> query concat -> sequence matching -> conditioned predictor
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import Tensor, nn

from emtm.models.base import DataSpec, GroundingModel, ModelConfig, Predictions, spans_to_fractions
from emtm.models.decode import decode_spans
from emtm.models.encoder import GroundingEncoder
from emtm.models.layers import (
    ConditionedPredictor,
    ContextQueryAttention,
    PooledFusion,
    QueryConcat,
    SequenceMatching,
)
from emtm.models.losses import boundary_loss, matching_loss


class StudentConfig(ModelConfig):
    d: int = 128
    dropout: float = 0.2
    n_heads: int = 8
    char_dim: int = 50
    match_ext: int = 2
    match_weight: float = 1.0
    # "standardize": per-dim input standardisation with training-set statistics (GroundingEncoder); the
    # default since it was measured on every benchmark (docs/RESULTS.md). "none": the features as they are
    video_norm: Literal["none", "standardize"] = "standardize"
    # The design choices below keep the paper's student at their defaults; each other value is one
    # measured alternative (docs/RESULTS.md, "Does the student generalise?").
    word_dropout: float | None = None  # dropout on the word vectors; None: `dropout`
    conv_kernel: int = Field(7, ge=1)  # width of the shared encoder's depthwise convs (odd)
    positions: Literal["absolute", "relative", "none"] = "absolute"  # every positional embedding
    # "cqa": context-query attention then query concat (SeqPAN); "pooled": the pooled query fused into
    # every clip, [v, q, v*q, v-q] (the recurrent bar's fusion)
    conditioning: Literal["cqa", "pooled"] = "cqa"

    @field_validator("conv_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (a centred window), got {value}")
        return value


def student_encoder(config: StudentConfig, spec: DataSpec) -> GroundingEncoder:
    """The shared encoder a StudentConfig describes (the student's, and EMTM's)."""
    return GroundingEncoder(
        spec,
        config.d,
        config.dropout,
        config.char_dim,
        video_norm=config.video_norm,
        word_dropout=config.word_dropout,
        kernel_size=config.conv_kernel,
        positions=config.positions,
    )


def student_head(config: StudentConfig, spec: DataSpec) -> SpanHead:
    return SpanHead(
        config.d, spec.max_video_len, config.n_heads, config.dropout, config.positions, config.conditioning
    )


class SpanHead(nn.Module):
    """Fusion and prediction on top of the encoder: CQA, query concat, matching, conditioned predictor."""

    def __init__(
        self,
        d: int,
        max_len: int,
        n_heads: int,
        dropout: float,
        positions: str = "absolute",
        conditioning: str = "cqa",
    ):
        super().__init__()
        self.conditioning = conditioning
        if conditioning == "pooled":
            self.fusion = PooledFusion(d, dropout)
        else:
            self.cq_attention = ContextQueryAttention(d, dropout)
            self.cq_concat = QueryConcat(d)
        self.matching = SequenceMatching(d)
        self.predictor = ConditionedPredictor(d, max_len, n_heads, dropout, positions)

    def forward(
        self, video: Tensor, query: Tensor, v_mask: Tensor, q_mask: Tensor, states: bool = False
    ) -> dict[str, Tensor]:
        """Start/end and matching logits; with `states`, also the fused clip states the predictor
        reads (`fused`, (B, L, d)): the head's last hidden states, for a hidden-state alignment."""
        if self.conditioning == "pooled":
            fused = self.fusion(video, query, v_mask, q_mask)
        else:
            fused = self.cq_attention(video, query, v_mask, q_mask)
            fused = self.cq_concat(fused, query, v_mask, q_mask)
        fused, match_logits = self.matching(fused, v_mask)
        start_logits, end_logits = self.predictor(fused, v_mask)
        out = {"start_logits": start_logits, "end_logits": end_logits, "match_logits": match_logits}
        if states:
            out["fused"] = fused
        return out


class SpanModel(GroundingModel):
    """Shared by every model that predicts start/end logits per clip: loss and decoding."""

    config: StudentConfig
    output_form = "span"

    def teacher_outputs(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"start_logits": outputs["start_logits"], "end_logits": outputs["end_logits"]}

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        loc = boundary_loss(outputs["start_logits"], outputs["end_logits"], batch)
        match = matching_loss(outputs["match_logits"], self.match_embeddings, batch, self.config.match_ext)
        total = loc + self.config.match_weight * match
        return total, {"loc": loc.item(), "match": match.item()}

    def predict(
        self,
        outputs: dict[str, Tensor],
        batch: dict[str, Tensor],
        top_k: int = 5,
        max_len: int | None = None,
        nms_iou: float | None = 0.5,
    ) -> Predictions:
        mask = batch["video_mask"]
        spans, scores = decode_spans(
            outputs["start_logits"].float(), outputs["end_logits"].float(), mask, top_k, max_len, nms_iou
        )
        return Predictions(spans_to_fractions(spans, mask), scores)


class Student(SpanModel):
    Config = StudentConfig

    def __init__(self, config: StudentConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        self.encoder = student_encoder(config, spec)
        self.head = student_head(config, spec)

    @property
    def match_embeddings(self) -> Tensor:
        return self.head.matching.label_embeddings

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        enc = self.encoder(batch)  # under torch.compile: query and video in one pass (encode_pair)
        return self.head(enc.video, enc.query, enc.video_mask, enc.query_mask)

    def encode_video(self, video: Tensor, video_mask: Tensor) -> Tensor:
        """The query-independent half of `forward`: (B, L, D) features -> (B, L, d) clip states.

        Compute it once per video and pass it to `ground_encoded` for any number of queries.
        """
        return self.encoder.encode_video(video, video_mask)

    def ground_encoded(
        self, video_enc: Tensor, video_mask: Tensor, words: Tensor, chars: Tensor, query_mask: Tensor
    ) -> dict[str, Tensor]:
        """The outputs of `forward` from an encoded video and a batch of B queries.

        `video_enc` (B or 1, L, d) and `video_mask` (B or 1, L); a single video is broadcast over
        the B queries of `words` (B, N), `chars` (B, N, C) and `query_mask` (B, N).
        """
        query = self.encoder.encode_query(words, chars, query_mask)
        n_queries = query.shape[0]
        if video_enc.shape[0] != n_queries:
            if video_enc.shape[0] != 1:
                raise ValueError(f"{video_enc.shape[0]} encoded videos for {n_queries} queries; need 1 or B")
            video_enc = video_enc.expand(n_queries, -1, -1)
            video_mask = video_mask.expand(n_queries, -1)
        return self.head(video_enc, query, video_mask, query_mask)
