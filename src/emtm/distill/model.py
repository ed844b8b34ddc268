"""The joint EMTM model trained by `emtm distill` (emtm-method.md §4-§6).

    shared encoder ─┬─ student head ─────────────── start/end logits (the only path at inference)
                    ├─ dual attention + span head ── isomorphic teacher (its own GT loss)
                    └─ KAU ── weights ── mixture of the cached teachers' distributions ── KD target

Loss = student hard + iso_weight · iso hard + ensemble_weight · ensemble hard
       + kd_weight · (KD(start) + KD(end)) + align_weight · hidden-state alignment.

KD weight: the method's 0.1 multiplies a KL summed over the batch; the losses here are batch means, so
the same setting at the paper's batch of 32 is 0.1 x 32 = 3.2, the default (measured best on validation
among the paper's variants, docs/RESULTS.md, "The KD weight"). kd_weight=0.1 gives the literal setting.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn

from emtm.distill.kau import KnowledgeAggregation, ensemble
from emtm.distill.losses import distribution_ce_per_query, ensemble_hard_loss, kd_loss
from emtm.distill.unify import regression_to_dist, span_to_dist
from emtm.models.base import DataSpec
from emtm.models.encoder import Encoded
from emtm.models.losses import boundary_loss, matching_loss
from emtm.models.seqpan import DualAttentionBlock
from emtm.models.student import SpanModel, StudentConfig, student_encoder, student_head

# What weighs the cached teachers (`emtm distill --aggregator`): the paper's KAU, per query; global
# weights fitted on the run's held-out validation queries when training starts; or the plain mean.
AGGREGATORS: dict[str, dict[str, object]] = {
    "kau": {},
    "fixed": {"use_kau": False, "fixed_weights": "validation"},
    "mean": {"use_kau": False},
}


class EMTMConfig(StudentConfig):
    n_teachers: int = 0  # offline teachers in the cache (0: isomorphic teacher only)
    n_dual: int = 2  # dual attention blocks of the isomorphic teacher
    isomorphic: bool = True  # train the isomorphic teacher on the shared encoder
    use_kau: bool = True  # False: plain mean of the teachers
    per_clip_weights: bool = False
    iso_in_kau: bool = False  # add the isomorphic teacher's live outputs as one more KAU teacher
    kau_hidden: int = 32
    # KAU variants (docs/RESULTS.md, the aggregation study); all off is the paper's KAU.
    kau_floor: float = 0.0  # weights floor / K + (1 - floor) softmax: no teacher's weight reaches 0
    kau_entropy: float = 0.0  # weight of an entropy bonus on the KAU's weights (against collapse)
    kau_soft_target: float = 0.0  # > 0: also fit the weights to softmax(-CE_k / this), as CA-MKD does
    kau_reliability: bool = False  # the KAU also reads each teacher's entropy, peak and agreement
    kau_detach: bool = False  # stop the KAU's gradient at the shared encoder
    # Global teacher weights instead of the KAU or the mean (with use_kau False): one [start, end] pair
    # per teacher, or "validation": the pair with the lowest hard loss on the run's held-out validation
    # queries, fitted when training starts (emtm.engine.run_data.with_fitted_weights) and recorded in
    # config.json. And a control for the ablation: a teacher-free KD target, the ground truth smoothed by
    # a Gaussian of this width (a fraction of the video), appended as one more "teacher": label
    # smoothing at the KD weight, no dark knowledge.
    fixed_weights: list[tuple[float, float]] | Literal["validation"] | None = None
    gt_smooth: float = 0.0

    @model_validator(mode="after")
    def _check_controls(self) -> EMTMConfig:
        if self.fixed_weights is not None:
            if self.use_kau:
                raise ValueError("fixed_weights replace the KAU: set use_kau to false with them")
            if self.fixed_weights == "validation":
                if self.gt_smooth:
                    raise ValueError("fixed_weights=validation weighs cached teachers only: no gt_smooth")
            elif any(w < 0 for pair in self.fixed_weights for w in pair) or not all(
                sum(col) > 0 for col in zip(*self.fixed_weights)
            ):
                raise ValueError("fixed_weights must be >= 0 with a positive sum for start and for end")
        if self.gt_smooth < 0:
            raise ValueError(f"gt_smooth must be >= 0, got {self.gt_smooth}")
        if self.gt_smooth and self.use_kau and self.n_teachers:
            raise ValueError("gt_smooth is a teacher-free control: set use_kau to false with it")
        return self

    temperature: float = 1.0
    kd_weight: float = 3.2  # the paper's batch-summed 0.1 as a batch mean at B = 32 (docstring)
    iso_weight: float = 1.0
    ensemble_weight: float = 1.0
    align_weight: float = 0.0


class EMTM(SpanModel):
    """Student + isomorphic teacher sharing one encoder, plus the KAU over cached teachers."""

    Config = EMTMConfig

    def __init__(self, config: EMTMConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        self.encoder = student_encoder(config, spec)
        self.head = student_head(config, spec)
        if config.isomorphic:
            self.dual = nn.ModuleList(
                DualAttentionBlock(config.d, config.n_heads, config.dropout) for _ in range(config.n_dual)
            )
            self.iso_head = student_head(config, spec)
        n_kau = config.n_teachers + (1 if config.iso_in_kau and config.isomorphic else 0)
        if n_kau and config.use_kau:
            self.kau = KnowledgeAggregation(
                config.d, n_kau, config.kau_hidden, config.per_clip_weights, config.kau_floor,
                config.kau_reliability,
            )  # fmt: skip

    @property
    def match_embeddings(self) -> Tensor:
        return self.head.matching.label_embeddings

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        enc = self.encoder(batch)
        if not self.training:  # inference: the student path only
            return self.head(enc.video, enc.query, enc.video_mask, enc.query_mask)
        align = self.config.isomorphic and self.config.align_weight > 0
        outputs = self.head(enc.video, enc.query, enc.video_mask, enc.query_mask, states=align)
        if self.config.isomorphic:
            outputs.update(self.isomorphic(enc, states=align))
        teacher_dists = self.teacher_distributions(batch)
        if teacher_dists is not None:
            if hasattr(self, "kau"):
                weights = self.weigh(enc, teacher_dists)
            else:
                weights = self.global_weights(teacher_dists)
            outputs["kau_weights"], outputs["teacher_dists"] = weights, teacher_dists
            if "kau_dists" in batch:  # cross-fitting: the KAU learns on out-of-fold outputs only
                kau_dists = self.with_live_teacher(batch["kau_dists"], teacher_dists)
                outputs["teacher_dists"] = kau_dists
                outputs["ens_start"], outputs["ens_end"] = ensemble(kau_dists, weights, enc.video_mask)
                target = ensemble(teacher_dists, weights.detach(), enc.video_mask)
                outputs["kd_start"], outputs["kd_end"] = target  # in-sample targets, the KAU's weights
            else:
                outputs["ens_start"], outputs["ens_end"] = ensemble(teacher_dists, weights, enc.video_mask)
        return outputs

    def with_live_teacher(self, kau_dists: Tensor, teacher_dists: Tensor) -> Tensor:
        """The out-of-fold caches, plus the teachers computed live (the isomorphic one, the smoothed
        ground truth) that have no out-of-fold copy: those come last in `teacher_dists`."""
        extra = teacher_dists.shape[1] - kau_dists.shape[1]
        return torch.cat([kau_dists, teacher_dists[:, kau_dists.shape[1] :]], 1) if extra > 0 else kau_dists

    def global_weights(self, teacher_dists: Tensor) -> Tensor:
        """(B, K, 2) weights without a KAU: `fixed_weights` normalised per boundary, else the mean."""
        b, k = teacher_dists.shape[:2]
        if self.config.fixed_weights is None:
            return torch.full((b, k, 2), 1.0 / k, device=teacher_dists.device)
        if self.config.fixed_weights == "validation":
            raise ValueError(
                "fixed_weights=validation are fitted when training starts (emtm.engine.run_data."
                "with_fitted_weights); this model was built before: give the fitted [start, end] pairs"
            )
        w = torch.tensor(self.config.fixed_weights, dtype=teacher_dists.dtype, device=teacher_dists.device)
        if w.shape != (k, 2):
            raise ValueError(f"fixed_weights has {len(w)} [start, end] pairs for {k} teachers")
        return (w / w.sum(0, keepdim=True)).expand(b, k, 2)

    def weigh(self, enc: Encoded, teacher_dists: Tensor) -> Tensor:
        """The KAU's teacher weights for these encoded samples (with kau_detach, on states that pass no
        gradient back to the shared encoder)."""
        video, query = (
            (enc.video.detach(), enc.query.detach()) if self.config.kau_detach else (enc.video, enc.query)
        )
        return self.kau(video, query, enc.video_mask, enc.query_mask, teacher_dists)

    def isomorphic(self, enc: Encoded, states: bool = False) -> dict[str, Tensor]:
        """The isomorphic teacher on the shared encoder's states: its head's outputs, prefixed iso_
        (with `states`, iso_fused: its head's last hidden states, at the depth of the student's)."""
        video, query = enc.video, enc.query
        for block in self.dual:
            video, query = block(video, query, enc.video_mask, enc.query_mask)
        iso = self.iso_head(video, query, enc.video_mask, enc.query_mask, states=states)
        return {f"iso_{k}": v for k, v in iso.items()}

    @torch.no_grad()
    def live_teacher_logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The isomorphic teacher's start/end logits as it would predict: eval mode (no dropout),
        no gradient; the module's train/eval state is restored."""
        was_training = self.training
        self.eval()
        try:
            iso = self.isomorphic(self.encoder(batch))
        finally:
            self.train(was_training)
        return iso["iso_start_logits"], iso["iso_end_logits"]

    def teacher_distributions(self, batch: dict[str, Tensor]) -> Tensor | None:
        """(B, K, 2, L): cached teachers, plus the live isomorphic teacher (eval mode) when asked."""
        dists = [batch["teacher_dists"]] if "teacher_dists" in batch else []
        if self.config.iso_in_kau and self.config.isomorphic:
            start_logits, end_logits = self.live_teacher_logits(batch)
            start, end = span_to_dist(start_logits, end_logits, batch["video_mask"], self.config.temperature)
            dists.append(torch.stack([start, end], 1).unsqueeze(1))
        if self.config.gt_smooth:
            window = torch.stack([batch["start_frac"], batch["end_frac"]], -1).float()
            start, end = regression_to_dist(window, batch["video_mask"], self.config.gt_smooth)
            dists.append(torch.stack([start, end], 1).unsqueeze(1))
        return torch.cat(dists, 1) if dists else None

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        total, parts = super().loss(outputs, batch)
        if cfg.isomorphic:
            iso = boundary_loss(outputs["iso_start_logits"], outputs["iso_end_logits"], batch)
            iso = iso + cfg.match_weight * matching_loss(
                outputs["iso_match_logits"], self.iso_head.matching.label_embeddings, batch, cfg.match_ext
            )
            total = total + cfg.iso_weight * iso
            parts["iso"] = iso.item()
            if cfg.align_weight:
                align = hidden_alignment(outputs["fused"], outputs["iso_fused"], batch["video_mask"])
                total = total + cfg.align_weight * align
                parts["align"] = align.item()
        if "ens_start" in outputs:
            ens = ensemble_hard_loss(outputs["ens_start"], outputs["ens_end"], batch)
            mask, t = batch["video_mask"], cfg.temperature
            start, end = (
                outputs.get("kd_start", outputs["ens_start"]),
                outputs.get("kd_end", outputs["ens_end"]),
            )
            kd = kd_loss(outputs["start_logits"], start, mask, t) + kd_loss(
                outputs["end_logits"], end, mask, t
            )
            total = total + cfg.ensemble_weight * ens + cfg.kd_weight * kd
            parts.update(ensemble=ens.item(), kd=kd.item())
            if hasattr(self, "kau") and (cfg.kau_entropy or cfg.kau_soft_target):
                total = total + self.kau_terms(outputs, batch, parts)
        return total, parts

    def kau_terms(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor], parts: dict[str, float]
    ) -> Tensor:
        """The KAU's own extra losses: minus an entropy bonus, and the KL from the CA-MKD soft target
        softmax(-CE_k / tau) (CE_k: teacher k's hard loss on this sample and boundary) to its weights."""
        cfg, w = self.config, outputs["kau_weights"]
        if w.dim() == 4:  # per clip: the mean over each sample's valid clips
            keep = batch["video_mask"][:, :, None, None].to(w.dtype)
            w = (w * keep).sum(1) / keep.sum(1)
        log_w = w.clamp_min(1e-12).log()
        extra = w.new_zeros(())
        if cfg.kau_entropy:
            entropy = -(w * log_w).sum(1).mean()
            extra = extra - cfg.kau_entropy * entropy
            parts["kau_entropy"] = entropy.item()
        if cfg.kau_soft_target:
            target = torch.softmax(-teacher_losses(outputs["teacher_dists"], batch) / cfg.kau_soft_target, 1)
            kl = (target * (target.clamp_min(1e-12).log() - log_w)).sum(1).mean()
            extra = extra + kl
            parts["kau_target"] = kl.item()
        return extra

    def student_state_dict(self) -> dict[str, Tensor]:
        """The weights of a plain `student` model: no teacher branch, no KAU."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("encoder.", "head."))}


def hidden_alignment(student_states: Tensor, teacher_states: Tensor, mask: Tensor) -> Tensor:
    """Mean squared distance between the student's and the isomorphic teacher's clip states at equal
    depth (each head's last hidden states, the input of its predictor); the teacher's are detached."""
    per_clip = F.mse_loss(student_states, teacher_states.detach(), reduction="none").mean(-1)
    return (per_clip * mask).sum() / mask.sum().clamp_min(1)


def teacher_losses(teacher_dists: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """(B, K, 2): each teacher's hard loss (soft-target CE against the smoothed boundary) per boundary."""
    mask = batch["video_mask"]
    per_boundary = [
        torch.stack(
            [
                distribution_ce_per_query(teacher_dists[:, k, j], batch[key], mask)
                for k in range(teacher_dists.shape[1])
            ],
            1,
        )
        for j, key in enumerate(("start_index", "end_index"))
    ]
    return torch.stack(per_boundary, -1).detach()
