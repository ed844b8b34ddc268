"""Global teacher weights fitted on held-out queries, the fixed-weights and gt-smooth controls."""

from __future__ import annotations

import pytest
import torch

from emtm.distill.mixtures import HeldOutDists, fit_global_weights, mixture_loss
from emtm.errors import ConfigError
from emtm.models.losses import smoothed_boundary_targets
from emtm.models.registry import build_model, model_config
from test_distill_model import OPTIONS, batch_with_teachers
from test_models import SPEC


def two_teachers(n: int = 300, length: int = 24) -> HeldOutDists:
    """Teacher 0 is right on starts and useless on ends; teacher 1 the other way round."""
    g = torch.Generator().manual_seed(0)
    start, end = torch.randint(0, length, (n,), generator=g), torch.randint(0, length, (n,), generator=g)
    mask = torch.ones(n, length, dtype=torch.bool)
    good_s, good_e = smoothed_boundary_targets(start, mask), smoothed_boundary_targets(end, mask)
    noise = torch.softmax(torch.randn(n, 2, length, generator=g) * 3, -1)
    dists = torch.stack([torch.stack([good_s, noise[:, 0]], 1), torch.stack([noise[:, 1], good_e], 1)], 1)
    return HeldOutDists([str(i) for i in range(n)], dists, mask, start, end)


def test_global_weights_find_the_right_teacher_per_boundary() -> None:
    held = two_teachers()
    w = fit_global_weights(held)
    assert w.shape == (2, 2)
    assert w[0, 0] > 0.9 and w[1, 1] > 0.9, "starts from teacher 0, ends from teacher 1"
    mean = mixture_loss(held, torch.full((2, 2), 0.5)).mean()
    assert mixture_loss(held, w).mean() < mean - 0.5


def test_fixed_weights_replace_the_mean() -> None:
    options = {**OPTIONS, "use_kau": False, "isomorphic": False, "fixed_weights": [[3.0, 1.0], [1.0, 1.0]]}
    model = build_model("emtm", model_config("emtm", options), SPEC).train()
    out = model(batch_with_teachers())
    torch.testing.assert_close(out["kau_weights"][0], torch.tensor([[0.75, 0.5], [0.25, 0.5]]))
    for bad in (
        {"fixed_weights": [[1.0, 1.0], [1.0, 1.0]]},
        {"use_kau": False, "fixed_weights": [[-1.0, 1.0]]},
        {"fixed_weights": "validation"},  # with the KAU on
        {"use_kau": False, "fixed_weights": "validation", "gt_smooth": 0.05},
        {"use_kau": False, "fixed_weights": "held-out"},
    ):
        with pytest.raises(ConfigError, match="fixed_weights"):
            model_config("emtm", {**OPTIONS, **bad})


def test_weights_to_fit_on_validation_are_fitted_before_a_model_uses_them() -> None:
    options = {**OPTIONS, "use_kau": False, "fixed_weights": "validation"}
    model = build_model("emtm", model_config("emtm", options), SPEC).train()
    with pytest.raises(ValueError, match="fitted when training starts"):
        model(batch_with_teachers())


def test_gt_smooth_distils_toward_the_smoothed_ground_truth() -> None:
    options = {
        "d": 32,
        "n_heads": 4,
        "n_teachers": 0,
        "use_kau": False,
        "isomorphic": False,
        "gt_smooth": 0.05,
    }
    model = build_model("emtm", model_config("emtm", options), SPEC).train()
    batch = batch_with_teachers()
    del batch["teacher_dists"]
    out = model(batch)
    assert out["teacher_dists"].shape[1] == 1
    start = out["ens_start"]
    torch.testing.assert_close(start.sum(1), torch.ones(2))
    assert (start.argmax(1) - batch["start_index"]).abs().max() <= 1, "peaked at the annotated start"
    _, parts = model.loss(out, batch)
    assert parts["kd"] > 0
