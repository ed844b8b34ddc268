"""Heavy teachers (seqpan, eamat, regress): contracts, FLOPs against the student, learning on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from emtm.config import TrainConfig
from emtm.data.dataset import collate
from emtm.engine.train import train
from emtm.errors import ConfigError
from emtm.models.base import OUTPUT_FORMS, DataSpec
from emtm.models.eamat import MotionAwareLayer
from emtm.models.registry import build_model, model_config
from emtm.models.seqpan import DualAttentionBlock
from helpers import make_item as _make_item

TEACHERS = ["seqpan", "eamat", "regress"]
SMALL = {"d": 32, "n_heads": 4}
SPEC = DataSpec(
    video_dim=1024, max_video_len=64, word_vectors=torch.randn(20, 8), n_chars=15, max_query_len=10
)


def make_item(length: int, n_words: int, seed: int) -> dict:
    return _make_item(length, n_words, seed, video_dim=SPEC.video_dim)


def small_options(name: str) -> dict:
    return {"d": 32} if name == "regress" else dict(SMALL)


def assert_same_valid_part(alone: dict, padded: dict, length: int) -> None:
    for key, value in alone.items():
        if value.dim() >= 2 and value.shape[1] == length:  # per-clip outputs: compare the valid part
            torch.testing.assert_close(value[0], padded[key][0, :length], rtol=1e-5, atol=1e-5, msg=key)
        else:
            torch.testing.assert_close(value[0], padded[key][0], rtol=1e-5, atol=1e-5, msg=key)


@pytest.mark.parametrize("name", TEACHERS)
def test_outputs_predictions_and_teacher_outputs_do_not_depend_on_padding(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, model_config(name, small_options(name)), SPEC).eval()
    short = make_item(7, 3, seed=1)
    alone_batch = collate([short])
    padded_batch = collate([short, make_item(25, 9, seed=2), make_item(16, 5, seed=3)])
    with torch.no_grad():
        alone, padded = model(alone_batch), model(padded_batch)
        assert_same_valid_part(alone, padded, 7)
        assert_same_valid_part(
            model.teacher_outputs(alone, alone_batch), model.teacher_outputs(padded, padded_batch), 7
        )
        pred_alone = model.predict(alone, alone_batch, top_k=3)
        pred_padded = model.predict(padded, padded_batch, top_k=3)
    torch.testing.assert_close(pred_alone.windows[0], pred_padded.windows[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pred_alone.scores[0], pred_padded.scores[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_output_form_and_windows(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, model_config(name, small_options(name)), SPEC).eval()
    batch = collate([make_item(5, 3, seed=4), make_item(30, 4, seed=5), make_item(64, 8, seed=6)])
    with torch.no_grad():
        outputs = model(batch)
        pred = model.predict(outputs, batch, top_k=5)
        native = model.teacher_outputs(outputs, batch)
    assert model.output_form in OUTPUT_FORMS
    assert pred.windows.shape[0] == 3 and pred.windows.shape[1] in (1, 5)
    assert pred.scores.shape == pred.windows.shape[:2]
    assert (pred.windows >= 0).all() and (pred.windows <= 1 + 1e-6).all()
    assert (pred.windows[..., 0] < pred.windows[..., 1]).all()
    if model.output_form == "span":
        assert set(native) == {"start_logits", "end_logits"}
        assert native["start_logits"].shape == native["end_logits"].shape == batch["video_mask"].shape
        assert all(torch.isfinite(v[batch["video_mask"]]).all() for v in native.values())
    else:
        assert model.output_form == "regression" and native["window"].shape == (3, 2)
        torch.testing.assert_close(native["window"], pred.windows[:, 0])


@pytest.mark.parametrize("name", TEACHERS)
def test_loss_is_finite_and_gradients_reach_every_trainable_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, model_config(name, small_options(name)), SPEC)
    batch = collate([make_item(10, 4, seed=6), make_item(14, 6, seed=7)])
    loss, parts = model.loss(model(batch), batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert parts and all(isinstance(v, float) for v in parts.values())
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []
    # The last bias of a start/end head shifts all clips' logits alike, and the softmax over the clips
    # ignores such a shift: its gradient is zero in exact arithmetic, so it may round to exactly zero.
    shift_only = ("start_head.2.bias", "end_head.2.bias")
    assert [n for n, p in trainable if not p.grad.any() and not n.endswith(shift_only)] == []


def test_dual_attention_block_updates_both_sides_and_zeroes_padding() -> None:
    torch.manual_seed(0)
    block = DualAttentionBlock(16, n_heads=4, dropout=0.0).eval()
    video, query = torch.randn(2, 9, 16), torch.randn(2, 5, 16)
    v_mask = torch.tensor([[True] * 9, [True] * 4 + [False] * 5])
    q_mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    new_video, new_query = block(video, query, v_mask, q_mask)
    assert new_video.shape == video.shape and new_query.shape == query.shape
    assert (new_video[1, 4:] == 0).all() and (new_query[1, 2:] == 0).all()
    alone_v, alone_q = block(video[1:, :4], query[1:, :2], v_mask[1:, :4], q_mask[1:, :2])
    torch.testing.assert_close(alone_v[0], new_video[1, :4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone_q[0], new_query[1, :2], rtol=1e-5, atol=1e-5)


def test_motion_attention_sees_only_its_window() -> None:
    torch.manual_seed(0)
    layer = MotionAwareLayer(16, n_heads=4, windows=(3,), dropout=0.0).eval()
    x, mask, query_vec = torch.randn(1, 12, 16), torch.ones(1, 12, dtype=torch.bool), torch.randn(1, 16)
    moved = x.clone()
    moved[0, 11] = torch.randn(16)
    out, out_moved = layer(x, mask, query_vec), layer(moved, mask, query_vec)
    torch.testing.assert_close(out[0, :10], out_moved[0, :10])  # window 3: clip 10 sees 11, clip 9 does not
    assert not torch.allclose(out[0, 10], out_moved[0, 10])


def test_eamat_config_is_checked() -> None:
    assert model_config("eamat", {"windows": [5, 9]}).windows == (5, 9)
    with pytest.raises(ConfigError, match="model.windows"):
        model_config("eamat", {"windows": [3, 4]})
    with pytest.raises(ConfigError, match="multiple of n_heads"):
        model_config("seqpan", {"d": 30})


def forward_flops(name: str) -> tuple[int, int]:
    """FLOPs of one forward (L = 64 clips, 8 words, batch 1, default config) and trainable parameters.

    Eval mode with autograd on, so that nn.MultiheadAttention takes its counted (non fast-path) route.
    """
    torch.manual_seed(0)
    model = build_model(name, model_config(name), SPEC).eval()
    batch = collate([make_item(64, 8, seed=8)])
    with FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops(), model.n_trainable


def test_seqpan_is_at_least_five_times_heavier_than_the_student() -> None:
    torch.set_num_threads(1)
    flops = {name: forward_flops(name)[0] for name in ["student", "seqpan", "eamat", "regress"]}
    assert flops["seqpan"] >= 5 * flops["student"], flops
    assert flops["eamat"] >= 5 * flops["student"], flops
    assert flops["regress"] > 0, flops


def train_config(
    data: Path, model: str, epochs: int, options: dict | None = None, lr: float = 5e-3
) -> TrainConfig:
    return TrainConfig(
        data=str(data),
        model=model,
        model_options=options or {},
        optim={"epochs": epochs, "batch_size": 16, "lr": lr},
        eval={"select_metric": "miou"},
        run={"progress": False, "device": "cpu", "threads": 1},
    )


@pytest.fixture(scope="module")
def tiny_val(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny benchmark validated on its test split (55 queries), not on the default hold-out of 6 videos
    (10 queries), whose mIoU moves by +-5 points from one epoch to the next."""
    raw = yaml.safe_load(tiny_data.read_text())
    raw.update(splits={"train": "train.txt", "val": "test.txt"}, root=str(tiny_data.parent))
    path = tmp_path_factory.mktemp("tiny_val") / "data.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def prior_miou(tiny_val: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    return train(train_config(tiny_val, "prior", 1), tmp_path_factory.mktemp("prior"))["best"]["miou"]


@pytest.mark.parametrize(("name", "epochs"), [("seqpan", 8), ("eamat", 8), ("regress", 10)])
def test_teacher_learns_on_tiny_data_and_beats_the_prior(
    name: str, epochs: int, tiny_val: Path, tmp_path: Path, prior_miou: float
) -> None:
    torch.set_num_threads(1)
    options = {**small_options(name), "dropout": 0.1}
    result = train(train_config(tiny_val, name, epochs, options), tmp_path / name)
    losses = [row["train_loss"] for row in result["history"]]
    assert losses[-1] < 0.9 * losses[0], losses
    assert result["best"]["miou"] > prior_miou + 5, (result["best"], prior_miou)
