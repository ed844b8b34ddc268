"""The heavy teachers `tan2d` (2D moment map) and `proposals` (boundary proposals): contracts and learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from emtm.config import TrainConfig
from emtm.data.dataset import collate
from emtm.engine.train import train
from emtm.models.base import DataSpec
from emtm.models.registry import build_model, model_config
from emtm.models.tan2d import bin_pooling_weights, cell_iou, moment_map, scaled_iou_targets
from helpers import make_item as _make_item

SPEC = DataSpec(video_dim=12, max_video_len=32, word_vectors=torch.randn(20, 8), n_chars=15, max_query_len=10)
SMALL = {
    "tan2d": {"d": 32, "d_map": 32, "n_bins": 8, "n_layers": 2},
    "proposals": {"d": 32, "top_m": 4},
}
TEACHERS = ["tan2d", "proposals"]


def make_item(length: int, n_words: int, seed: int, start: int = 1, end: int | None = None) -> dict:
    return _make_item(length, n_words, seed, SPEC.video_dim, start, end, unk_first=True)


def build(name: str, options: dict | None = None):
    torch.manual_seed(0)
    return build_model(name, model_config(name, SMALL[name] if options is None else options), SPEC)


@pytest.mark.parametrize("default_config", [False, True])
@pytest.mark.parametrize("name", TEACHERS)
def test_outputs_do_not_depend_on_padding(name: str, default_config: bool) -> None:
    torch.set_num_threads(1)
    model = build(name, {} if default_config else None).eval()
    short = make_item(7, 3, seed=1)
    alone_batch = collate([short])
    padded_batch = collate([short, make_item(25, 9, seed=2), make_item(16, 5, seed=3)])
    with torch.no_grad():
        alone, padded = model(alone_batch), model(padded_batch)
        for key, value in alone.items():
            other = (
                padded[key][0, : value.shape[1]] if key in ("start_logits", "end_logits") else padded[key][0]
            )
            torch.testing.assert_close(value[0], other, rtol=1e-5, atol=1e-5, msg=key)
        pred_alone = model.predict(alone, alone_batch, top_k=3)
        pred_padded = model.predict(padded, padded_batch, top_k=3)
        teach_alone = model.teacher_outputs(alone, alone_batch)
        teach_padded = model.teacher_outputs(padded, padded_batch)
    torch.testing.assert_close(pred_alone.windows[0], pred_padded.windows[0])
    torch.testing.assert_close(pred_alone.scores[0], pred_padded.scores[0], rtol=1e-5, atol=1e-6)
    assert teach_alone.keys() == teach_padded.keys()
    for key, value in teach_alone.items():
        torch.testing.assert_close(value[0], teach_padded[key][0], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", TEACHERS)
def test_windows_stay_inside_the_video(name: str) -> None:
    torch.set_num_threads(1)
    model = build(name).eval()
    batch = collate(
        [make_item(5, 3, seed=4), make_item(30, 4, seed=5), make_item(2, 2, seed=6, start=0, end=1)]
    )
    with torch.no_grad():
        outputs = model(batch)
        for max_len in (None, 1, 3):
            pred = model.predict(outputs, batch, top_k=5, max_len=max_len)
            assert pred.windows.shape == (3, 5, 2) and pred.scores.shape == (3, 5)
            assert (pred.windows >= 0).all() and (pred.windows <= 1 + 1e-6).all()
            assert (pred.windows[..., 0] < pred.windows[..., 1]).all()
            assert (pred.scores[:, :1] >= pred.scores - 1e-7).all()  # best first
        teach = model.teacher_outputs(outputs, batch)
    assert model.output_form in ("2dmap", "proposals")
    if model.output_form == "2dmap":
        n = model.config.n_bins
        assert teach["map_scores"].shape == teach["map_mask"].shape == (3, n, n)
        assert teach["map_mask"].dtype == torch.bool and not teach["map_mask"].tril(-1).any()
        assert ((teach["map_scores"] >= 0) & (teach["map_scores"] <= 1)).all()
        assert (teach["map_scores"][~teach["map_mask"]] == 0).all()
    else:
        windows, scores = teach["windows"], teach["scores"]
        k = model.config.top_m**2 + model.config.top_m
        assert windows.shape == (3, k, 2) and scores.shape == (3, k)
        assert (scores >= 0).all() and (scores[:, :-1] >= scores[:, 1:]).all()
        assert (windows >= 0).all() and (windows <= 1).all() and (windows[..., 0] < windows[..., 1]).all()
        assert (teach["valid"] == (scores > 0)).all()
        assert teach["valid"][2].sum() <= 3  # a 2-clip video has at most 3 moments


@pytest.mark.parametrize("name", TEACHERS)
def test_gradients_reach_every_trainable_parameter(name: str) -> None:
    torch.set_num_threads(1)
    model = build(name)
    batch = collate([make_item(10, 4, seed=6, start=2, end=5), make_item(14, 6, seed=7, start=0, end=13)])
    loss, parts = model.loss(model(batch), batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert parts and all(isinstance(v, float) for v in parts.values())
    loss.backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert no_grad == []
    assert not any(n.split(".")[-1] == "vectors" for n, _ in model.named_parameters())


def test_scaled_iou_targets_by_hand() -> None:
    # N = 4, GT = [0.25, 0.75]: cell (i, j) is [i/4, (j+1)/4].
    iou = cell_iou(4, torch.tensor([[0.25, 0.75]]))[0]
    targets = scaled_iou_targets(iou, 0.5, 1.0)
    expected_iou = torch.tensor(
        [
            [0.0, 1 / 3, 2 / 3, 1 / 2],
            [0.0, 1 / 2, 1.0, 2 / 3],
            [0.0, 0.0, 1 / 2, 1 / 3],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(iou, expected_iou)
    expected = torch.tensor(
        [
            [0.0, 0.0, 1 / 3, 0.0],
            [0.0, 0.0, 1.0, 1 / 3],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(targets, expected)
    # Lower thresholds: y = (iou - 0.3) / 0.4, clamped to [0, 1].
    torch.testing.assert_close(
        scaled_iou_targets(torch.tensor([0.2, 0.5, 0.7, 0.9]), 0.3, 0.7), torch.tensor([0.0, 0.5, 1.0, 1.0])
    )


def test_tan2d_loss_is_bce_over_valid_cells() -> None:
    model = build("tan2d", {"d": 16, "d_map": 16, "n_bins": 4, "n_layers": 1, "max_span": 3})
    batch = collate([make_item(8, 3, seed=8, start=2, end=5)])  # GT [2/8, 6/8] = [0.25, 0.75]
    logits = torch.randn(1, 4, 4)
    loss, _ = model.loss({"map_logits": logits}, batch)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    targets = scaled_iou_targets(cell_iou(4, torch.tensor([[0.25, 0.75]])), 0.5, 1.0)[0]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[0][mask], targets[mask])
    torch.testing.assert_close(loss, expected)


def test_bins_and_moment_map() -> None:
    mask = torch.tensor([[True] * 6 + [False] * 2, [True] * 3 + [False] * 5])
    weights = bin_pooling_weights(mask, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))
    assert (weights[0, :, 6:] == 0).all() and (weights[1, :, 3:] == 0).all()
    # 6 clips into 4 bins: [0, 2), [1, 3), [3, 5), [4, 6); 3 clips into 4: [0, 1), [0, 2), [1, 3), [2, 3).
    assert weights[0].nonzero()[:, 1].tolist() == [0, 1, 1, 2, 3, 4, 4, 5]
    assert weights[1].nonzero()[:, 1].tolist() == [0, 0, 1, 1, 2, 2]
    bins = torch.tensor([[[1.0], [3.0], [2.0], [0.0]]])
    cells = moment_map(bins, max_span=3)[0, 0]
    expected = torch.tensor([[1.0, 3, 3, 0], [0, 3, 3, 3], [0, 0, 2, 2], [0, 0, 0, 0]])
    torch.testing.assert_close(cells, expected)


def test_proposals_are_ordered_pairs_of_top_boundaries() -> None:
    model = build("proposals", {"d": 16, "top_m": 2, "max_proposal_len": 4})
    mask = torch.tensor([[True] * 6 + [False] * 2])
    start_logits = torch.tensor([[0.0, 5, -5, -5, 4, -5, 9, 9]])  # top starts 1, 4 (6, 7 are padding)
    end_logits = torch.tensor([[-5.0, -5, 6, -5, -5, 5, 9, 9]])  # top ends 2, 5
    starts, ends, ok = model.generate(start_logits, end_logits, mask)
    pairs = {(s, e) for s, e, v in zip(starts[0].tolist(), ends[0].tolist(), ok[0].tolist()) if v}
    # (1, 5) is 5 clips long; start 1 completes to 2 (already in the grid), start 4 to 5 (in the grid).
    assert pairs == {(1, 2), (4, 5)}
    assert ok.shape == (1, 6)


def flops(model, batch: dict) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops()


def test_teachers_are_heavier_than_the_student() -> None:
    torch.set_num_threads(1)
    spec = DataSpec(
        video_dim=1024, max_video_len=64, word_vectors=torch.randn(20, 50), n_chars=15, max_query_len=10
    )
    g = torch.Generator().manual_seed(0)
    item = {
        **make_item(64, 8, seed=9, start=10, end=30),
        "video": torch.randn(64, 1024, generator=g).numpy(),
    }
    batch = collate([item])
    measured = {}
    for name in ("student", "tan2d", "proposals"):
        torch.manual_seed(0)
        model = build_model(name, model_config(name), spec).eval()
        measured[name] = (flops(model, batch), model.n_trainable)
    student_flops, student_params = measured["student"]
    assert measured["tan2d"][0] >= 10 * student_flops, measured
    assert measured["proposals"][0] > student_flops, measured
    assert measured["tan2d"][1] > student_params and measured["proposals"][1] > student_params, measured


def config(data: Path, model: str, epochs: int, options: dict | None = None, lr: float = 2e-3) -> TrainConfig:
    return TrainConfig(
        data=str(data),
        model=model,
        model_options=options or {},
        optim={"epochs": epochs, "batch_size": 16, "lr": lr},
        run={"progress": False, "device": "cpu", "threads": 1},
    )


@pytest.fixture(scope="module")
def prior_miou(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    return train(config(tiny_data, "prior", 1), tmp_path_factory.mktemp("prior"))["best"]["miou"]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("tan2d", {"d": 32, "d_map": 32, "n_bins": 16, "n_layers": 2, "kernel_size": 3}),
        ("proposals", {"d": 32}),
    ],
)
def test_teacher_learns_and_beats_the_prior(
    tiny_data: Path, tmp_path: Path, prior_miou: float, name: str, options: dict
) -> None:
    result = train(config(tiny_data, name, 12, options, lr=5e-3), tmp_path / name)
    losses = [row["train_loss"] for row in result["history"]]
    assert losses[-1] < 0.9 * losses[0], losses
    # The checkpoint the engine keeps (best validation epoch), as in test_train's student test. The tiny
    # preset's validation split has 13 videos, so the margin moves by a few points with the last bits of
    # the arithmetic (the proposal teacher: above +5 with Conv1d depthwise kernels, +4.2 with the
    # channels-last conv2d ones); a teacher that does not learn stays at the prior or below.
    assert result["best"]["miou"] > prior_miou + 3, (result["best"], prior_miou)
