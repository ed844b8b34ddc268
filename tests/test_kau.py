"""KAU weights and the distillation losses."""

from __future__ import annotations

import pytest
import torch

from emtm.distill.kau import KnowledgeAggregation, ensemble, reliability_features
from emtm.distill.losses import ensemble_hard_loss, kd_loss
from emtm.models.layers import masked_softmax
from emtm.models.losses import smoothed_boundary_targets
from emtm.models.registry import build_model, model_config
from test_distill_model import OPTIONS, batch_with_teachers
from test_models import SPEC


def inputs(seed: int = 0, b: int = 3, length: int = 12, n: int = 5, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    video, query = torch.randn(b, length, d, generator=g), torch.randn(b, n, d, generator=g)
    video_mask = torch.arange(length) < torch.tensor([12, 7, 4]).unsqueeze(1)
    query_mask = torch.arange(n) < torch.tensor([5, 2, 3]).unsqueeze(1)
    return video, query, video_mask, query_mask


@pytest.mark.parametrize("per_clip", [False, True])
def test_weights_sum_to_one_and_depend_on_the_sample(per_clip: bool) -> None:
    torch.manual_seed(0)
    kau = KnowledgeAggregation(16, n_teachers=3, per_clip=per_clip)
    weights = kau(*inputs())
    teacher_axis = 2 if per_clip else 1
    torch.testing.assert_close(weights.sum(teacher_axis), torch.ones_like(weights.sum(teacher_axis)))
    assert (weights >= 0).all()
    first, second = (weights[0, 0], weights[1, 0]) if per_clip else (weights[0], weights[1])
    assert not torch.allclose(first, second, atol=1e-4), "weights must differ between samples"


def test_weights_do_not_depend_on_padding() -> None:
    torch.manual_seed(0)
    kau = KnowledgeAggregation(16, n_teachers=4).eval()
    video, query, video_mask, query_mask = inputs()
    batched = kau(video, query, video_mask, query_mask)
    alone = kau(video[1:2, :7], query[1:2, :2], video_mask[1:2, :7], query_mask[1:2, :2])
    torch.testing.assert_close(alone[0], batched[1], rtol=1e-5, atol=1e-6)


def test_ensemble_is_the_weighted_mixture() -> None:
    mask = torch.tensor([[True, True, True, False]])
    dists = torch.tensor(
        [[[[1.0, 0, 0, 0], [0, 0, 1.0, 0]], [[0, 1.0, 0, 0], [0, 1.0, 0, 0]]]]
    )  # (1, 2, 2, 4)
    weights = torch.tensor([[[0.25, 0.5], [0.75, 0.5]]])  # (1, K=2, 2)
    start, end = ensemble(dists, weights, mask)
    torch.testing.assert_close(start, torch.tensor([[0.25, 0.75, 0.0, 0.0]]))
    torch.testing.assert_close(end, torch.tensor([[0.0, 0.5, 0.5, 0.0]]))
    per_clip = weights.unsqueeze(1).expand(1, 4, 2, 2)
    torch.testing.assert_close(ensemble(dists, per_clip, mask)[0], start)


def test_kd_loss_is_zero_at_the_target_scales_with_t2_and_stops_gradient() -> None:
    mask = torch.tensor([[True] * 5 + [False] * 2])
    logits = torch.randn(1, 7, requires_grad=True)
    target = masked_softmax(logits.detach() / 2.0, mask)
    assert kd_loss(logits, target, mask, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    other = masked_softmax(torch.randn(1, 7), mask).requires_grad_(True)
    loss = kd_loss(logits, other, mask, temperature=3.0)
    assert loss.item() > 0
    loss.backward()
    assert other.grad is None and logits.grad is not None
    kl_t1 = kd_loss(logits.detach(), other.detach(), mask, temperature=1.0)
    assert kd_loss(logits.detach() * 3, other.detach(), mask, temperature=3.0).item() == pytest.approx(
        9 * kl_t1.item(), rel=1e-5
    )


def test_ensemble_hard_loss_trains_the_kau_weights() -> None:
    torch.manual_seed(0)
    kau = KnowledgeAggregation(16, n_teachers=2)
    video, query, video_mask, query_mask = inputs()
    b, length = video_mask.shape
    gt = torch.ones(b, dtype=torch.long)
    good = smoothed_boundary_targets(gt, video_mask).unsqueeze(1).expand(b, 2, length)  # teacher 0 = the GT
    bad = masked_softmax(torch.zeros(b, length), video_mask).unsqueeze(1).expand(b, 2, length)
    dists = torch.stack([good, bad], 1)
    batch = {"video_mask": video_mask, "start_index": gt, "end_index": gt}
    optimizer = torch.optim.Adam(kau.parameters(), lr=1e-2)
    for _ in range(60):
        loss = ensemble_hard_loss(
            *ensemble(dists, kau(video, query, video_mask, query_mask), video_mask), batch
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (kau(video, query, video_mask, query_mask)[:, 0] > 0.9).all(), "weight moves to the right teacher"


def test_a_kau_with_a_floor_cannot_collapse() -> None:
    torch.manual_seed(0)
    kau = KnowledgeAggregation(16, 3, hidden=8, floor=0.3)
    with torch.no_grad():
        kau.head[-1].bias.copy_(torch.tensor([50.0, 50.0, -50.0, -50.0, -50.0, -50.0]))  # all on teacher 0
    video, mask = torch.randn(2, 9, 16), torch.ones(2, 9, dtype=torch.bool)
    w = kau(video, torch.randn(2, 4, 16), mask, torch.ones(2, 4, dtype=torch.bool))
    assert (w >= 0.1 - 1e-6).all(), "each of 3 teachers keeps at least floor / K"
    torch.testing.assert_close(w.sum(1), torch.ones(2, 2))
    paper = KnowledgeAggregation(16, 3, hidden=8)
    paper.load_state_dict(kau.state_dict())
    assert paper(video, torch.randn(2, 4, 16), mask, torch.ones(2, 4, dtype=torch.bool))[:, 1:].max() < 1e-6


def test_reliability_features_read_certainty_and_agreement() -> None:
    mask = torch.ones(1, 10, dtype=torch.bool)
    sharp = torch.zeros(10)
    sharp[3] = 1.0
    uniform = torch.full((10,), 0.1)
    dists = torch.stack([sharp, sharp, uniform])[None, :, None, :].expand(1, 3, 2, 10)
    f = reliability_features(dists, mask)  # (1, 3, 2, 3): entropy, peak, agreement
    assert f.shape == (1, 3, 2, 3)
    assert f[0, 0, 0, 0] == pytest.approx(0.0, abs=1e-6) and f[0, 2, 0, 0] == pytest.approx(1.0, abs=1e-5)
    assert f[0, 0, 0, 1] == pytest.approx(1.0) and f[0, 2, 0, 1] == pytest.approx(0.1)
    assert f[0, 0, 0, 2] > f[0, 2, 0, 2], "the two sharp teachers agree with each other more"


def test_soft_target_entropy_and_stop_gradient_variants() -> None:
    torch.manual_seed(0)
    variant = {"kau_floor": 0.1, "kau_entropy": 0.1, "kau_soft_target": 1.0, "kau_reliability": True}
    model = build_model("emtm", model_config("emtm", {**OPTIONS, **variant}), SPEC).train()
    batch = batch_with_teachers()
    outputs = model(batch)
    loss, parts = model.loss(outputs, batch)
    assert {"kau_entropy", "kau_target"} <= set(parts) and torch.isfinite(loss)
    loss.backward()
    assert model.kau.head[-1].weight.grad.abs().sum() > 0
    detached = build_model("emtm", model_config("emtm", {**OPTIONS, "kau_detach": True}), SPEC).train()
    out = detached(batch)
    ensemble_hard_loss(out["ens_start"], out["ens_end"], batch).backward()  # trains the KAU only
    assert detached.kau.head[-1].weight.grad.abs().sum() > 0
    assert detached.encoder.video_proj[1].weight.grad is None, "no KAU gradient reaches the encoder"
