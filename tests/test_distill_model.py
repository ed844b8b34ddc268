"""The joint EMTM model: shared encoder, isomorphic teacher, KAU ensemble, student-only export."""

from __future__ import annotations

import torch

from emtm.data.dataset import collate
from emtm.distill.unify import span_to_dist
from emtm.models.registry import build_model, model_config
from helpers import make_item
from test_models import SPEC

OPTIONS = {"d": 32, "n_heads": 4, "n_teachers": 2}


def batch_with_teachers(seed: int = 0) -> dict:
    batch = collate([make_item(7, 3, seed=1), make_item(20, 5, seed=2)])
    g = torch.Generator().manual_seed(seed)
    dists = torch.rand(2, 2, 2, 20, generator=g) * batch["video_mask"][:, None, None]
    batch["teacher_dists"] = dists / dists.sum(-1, keepdim=True)
    return batch


def test_teacher_branch_trains_the_shared_encoder() -> None:
    torch.manual_seed(0)
    model = build_model("emtm", model_config("emtm", OPTIONS), SPEC).train()
    batch = batch_with_teachers()
    outputs = model(batch)
    iso_only = outputs["iso_start_logits"].sum() + outputs["iso_end_logits"].sum()
    iso_only.backward()
    assert model.encoder.video_proj[1].weight.grad.abs().sum() > 0, "isomorphic teacher reaches the encoder"
    assert model.head.predictor.start_head[0].weight.grad is None, "and not the student head"


def test_loss_has_every_term_and_kau_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    model = build_model("emtm", model_config("emtm", {**OPTIONS, "align_weight": 0.5}), SPEC).train()
    batch = batch_with_teachers()
    outputs = model(batch)
    loss, parts = model.loss(outputs, batch)
    assert set(parts) == {"loc", "match", "iso", "align", "ensemble", "kd"}
    assert torch.isfinite(loss)
    torch.testing.assert_close(outputs["kau_weights"].sum(1), torch.ones(2, 2))
    loss.backward()
    assert model.kau.head[-1].weight.grad.abs().sum() > 0


def test_mean_of_teachers_without_kau_and_iso_as_extra_teacher() -> None:
    torch.manual_seed(0)
    mean_model = build_model("emtm", model_config("emtm", {**OPTIONS, "use_kau": False}), SPEC).train()
    outputs = mean_model(batch_with_teachers())
    torch.testing.assert_close(outputs["kau_weights"], torch.full((2, 2, 2), 0.5))
    iso_model = build_model("emtm", model_config("emtm", {**OPTIONS, "iso_in_kau": True}), SPEC).train()
    assert iso_model(batch_with_teachers())["kau_weights"].shape == (2, 3, 2)


def test_inference_runs_the_student_only_and_exports_a_plain_student() -> None:
    torch.manual_seed(0)
    model = build_model("emtm", model_config("emtm", OPTIONS), SPEC).eval()
    batch = batch_with_teachers()
    with torch.no_grad():
        outputs = model(batch)
    assert set(outputs) == {"start_logits", "end_logits", "match_logits"}
    exported = model.student_state_dict()
    assert not any(k.startswith(("dual", "iso_head", "kau")) for k in exported)
    student = build_model("student", model_config("student", {"d": 32, "n_heads": 4}), SPEC).eval()
    student.load_state_dict(exported, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(student(batch)["start_logits"], outputs["start_logits"])


def test_alignment_compares_the_two_heads_states_at_equal_depth(monkeypatch) -> None:
    import emtm.distill.model as distill_model

    torch.manual_seed(0)
    model = build_model("emtm", model_config("emtm", {**OPTIONS, "align_weight": 1.0}), SPEC).train()
    batch = batch_with_teachers()
    outputs = model(batch)
    seen, original = {}, distill_model.hidden_alignment

    def spy(student, teacher, mask):
        seen.update(student=student, teacher=teacher)
        return original(student, teacher, mask)

    monkeypatch.setattr(distill_model, "hidden_alignment", spy)
    model.loss(outputs, batch)
    # Both are the states each head's predictor reads, not the encoder's output (the teacher's input).
    assert seen["student"] is outputs["fused"] and seen["teacher"] is outputs["iso_fused"]
    enc = model.encoder(batch)
    assert seen["student"].shape == seen["teacher"].shape == enc.video.shape
    assert "fused" not in model.eval()(batch), "inference outputs are unchanged"


def test_live_isomorphic_teacher_is_read_in_eval_mode() -> None:
    torch.manual_seed(0)
    options = {**OPTIONS, "iso_in_kau": True, "dropout": 0.5}
    model = build_model("emtm", model_config("emtm", options), SPEC).train()
    batch = batch_with_teachers()
    first = model.teacher_distributions(batch)[:, -1]
    second = model.teacher_distributions(batch)[:, -1]
    torch.testing.assert_close(first, second)  # dropout at 0.5 would make them differ
    assert model.training, "the train mode is restored"
    with torch.no_grad():
        iso = model.eval().isomorphic(model.encoder(batch))
    model.train()
    logits = (iso["iso_start_logits"], iso["iso_end_logits"])
    expected = span_to_dist(*logits, batch["video_mask"], model.config.temperature)
    torch.testing.assert_close(first[:, 0], expected[0])
    torch.testing.assert_close(first[:, 1], expected[1])


def test_default_kd_weight_is_the_papers_setting_as_a_batch_mean() -> None:
    assert model_config("emtm").kd_weight == 3.2


def test_cross_fitting_trains_the_kau_on_out_of_fold_outputs_and_distils_in_sample() -> None:
    from emtm.distill.kau import ensemble

    torch.manual_seed(0)
    model = build_model("emtm", model_config("emtm", OPTIONS), SPEC).train()
    batch = batch_with_teachers(seed=0)
    batch["kau_dists"] = batch_with_teachers(seed=1)["teacher_dists"]  # other (out-of-fold) outputs
    out = model(batch)
    w, mask = out["kau_weights"], batch["video_mask"]
    torch.testing.assert_close(out["ens_start"], ensemble(batch["kau_dists"], w, mask)[0])
    torch.testing.assert_close(out["kd_start"], ensemble(batch["teacher_dists"], w, mask)[0])
    assert not out["kd_start"].requires_grad, "the KD target carries no gradient into the KAU"
    loss, parts = model.loss(out, batch)
    assert {"ensemble", "kd"} <= set(parts) and torch.isfinite(loss)
