"""Model contracts: padding invariance, masks, registry, losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emtm.data.dataset import collate
from emtm.errors import ConfigError
from emtm.models.base import DataSpec
from emtm.models.layers import SelfAttentionBlock, matmul_attention
from emtm.models.losses import BEGIN, END, INSIDE, OUTSIDE, matching_labels, smoothed_boundary_targets
from emtm.models.registry import build_model, model_config, model_names
from helpers import make_item

SPEC = DataSpec(video_dim=12, max_video_len=32, word_vectors=torch.randn(20, 8), n_chars=15, max_query_len=10)


def use_matmul_attention(model: torch.nn.Module) -> torch.nn.Module:
    for block in model.modules():
        if isinstance(block, SelfAttentionBlock):
            block.matmul_attention = True
    return model


@pytest.mark.parametrize("name", ["student", "student+attn=matmul", "meanpool", "prior", "bigru"])
def test_outputs_do_not_depend_on_padding(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name.split("+")[0], model_config(name.split("+")[0]), SPEC).eval()
    if name.endswith("attn=matmul"):
        use_matmul_attention(model)
    check_padding_invariance(model)


# each of the student's measured design alternatives (docs/RESULTS.md, "Does the student generalise?")
STUDENT_VARIANTS = [
    {"positions": "relative"},
    {"positions": "none"},
    {"conditioning": "pooled"},
    {"conv_kernel": 15},
    {"char_dim": 0},
    {"word_dropout": 0.0},
]


@pytest.mark.parametrize(
    "options", STUDENT_VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
@pytest.mark.parametrize("name", ["student", "emtm"])
def test_student_variants_do_not_depend_on_padding(name: str, options: dict) -> None:
    torch.manual_seed(0)
    check_padding_invariance(build_model(name, model_config(name, options), SPEC).eval())


def check_padding_invariance(model: torch.nn.Module) -> None:
    short = make_item(7, 3, seed=1)
    batch_items = [short, make_item(25, 9, seed=2), make_item(16, 5, seed=3)]
    with torch.no_grad():
        alone_batch = collate([short])
        padded_batch = collate(batch_items)
        alone, padded = model(alone_batch), model(padded_batch)
        for key, value in alone.items():
            if value.dim() >= 2 and value.shape[1] == 7:  # per-clip outputs: compare the valid part
                torch.testing.assert_close(value[0], padded[key][0, :7], rtol=1e-5, atol=1e-5)
            else:
                torch.testing.assert_close(value[0], padded[key][0], rtol=1e-5, atol=1e-5)
        pred_alone = model.predict(alone, alone_batch, top_k=3)
        pred_padded = model.predict(padded, padded_batch, top_k=3)
    torch.testing.assert_close(pred_alone.windows[0], pred_padded.windows[0])


def test_matmul_attention_is_scaled_dot_product_attention() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 4) for _ in range(3))
    mask = torch.arange(7) < torch.tensor([7, 3, 1])[:, None]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(matmul_attention(q, k, v, mask), expected, rtol=1e-5, atol=1e-6)
    model = build_model("student", model_config("student"), SPEC).eval()
    batch = collate([make_item(7, 3, seed=1), make_item(25, 9, seed=2)])
    with torch.no_grad():
        fused = model(batch)
        matmul = use_matmul_attention(model)(batch)
    for key in ("start_logits", "end_logits"):
        torch.testing.assert_close(matmul[key], fused[key], rtol=1e-4, atol=1e-5)


def test_student_never_predicts_into_padding() -> None:
    torch.manual_seed(0)
    model = build_model("student", model_config("student"), SPEC).eval()
    batch = collate([make_item(5, 3, seed=4), make_item(30, 4, seed=5)])
    with torch.no_grad():
        pred = model.predict(model(batch), batch, top_k=5)
    assert (pred.windows >= 0).all() and (pred.windows <= 1 + 1e-6).all()
    assert (pred.windows[..., 0] < pred.windows[..., 1]).all()


@pytest.mark.parametrize("options", [{}, *STUDENT_VARIANTS[:3]])
def test_student_gradients_reach_every_trainable_parameter(options: dict) -> None:
    torch.manual_seed(0)
    model = build_model("student", model_config("student", {"d": 32, "n_heads": 4, **options}), SPEC)
    batch = collate([make_item(10, 4, seed=6), make_item(14, 6, seed=7)])
    loss, parts = model.loss(model(batch), batch)
    loss.backward()
    assert set(parts) == {"loc", "match"}
    # The last bias of the start/end heads adds one constant to every clip's logit, which the softmax
    # over clips ignores: its gradient is zero up to rounding, so it only has to be reached.
    shift_invariant = {f"head.predictor.{side}_head.2.bias" for side in ("start", "end")}
    no_grad = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or (n not in shift_invariant and not p.grad.any()))
    ]
    assert no_grad == []
    assert not any(n.split(".")[-1] == "vectors" for n, _ in model.named_parameters()), (
        "word vectors are frozen"
    )


def test_relative_positions_span_the_table_whatever_the_length() -> None:
    from emtm.models.layers import PositionalEmbedding

    pos = PositionalEmbedding(4, 9, "relative")
    mask = torch.arange(6) < torch.tensor([6, 3])[:, None]
    out = pos(torch.zeros(2, 6, 4), mask)
    table = pos.table.weight.detach()
    # the first and the last valid position read the first and the last row, for either length
    for row, last in ((0, 5), (1, 2)):
        torch.testing.assert_close(out[row, 0], table[0])
        torch.testing.assert_close(out[row, last], table[8])
    torch.testing.assert_close(out[0, 1], table[2])  # round(1 * 8 / 5) = 2
    absolute = PositionalEmbedding(4, 9)
    assert not torch.equal(absolute(torch.zeros(2, 6, 4), mask)[1, 2], absolute.table.weight[8])
    x = torch.randn(2, 6, 4)
    assert torch.equal(PositionalEmbedding(4, 9, "none")(x, mask), x)


def test_student_options_change_what_they_name() -> None:
    plain = build_model("student", model_config("student"), SPEC)
    words_only = build_model("student", model_config("student", {"char_dim": 0}), SPEC)
    assert words_only.encoder.chars is None and plain.encoder.chars is not None
    wide = build_model("student", model_config("student", {"conv_kernel": 15}), SPEC)
    assert wide.encoder.conv.convs[0].depthwise.kernel_size == (15,)
    pooled = build_model("student", model_config("student", {"conditioning": "pooled"}), SPEC)
    assert not hasattr(pooled.head, "cq_attention") and hasattr(plain.head, "cq_attention")
    assert (
        build_model("student", model_config("student", {"word_dropout": 0.0}), SPEC).encoder.word_dropout.p
        == 0
    )
    with pytest.raises(ConfigError, match="conv_kernel must be odd"):
        model_config("student", {"conv_kernel": 6})
    with pytest.raises(ConfigError, match="positions"):
        model_config("student", {"positions": "sinusoid"})


def test_registry_validates_options() -> None:
    assert {"student", "prior", "meanpool", "bigru"} <= set(model_names())
    assert model_config("student", {"d": 64}).d == 64
    with pytest.raises(ConfigError, match="model.dd"):
        model_config("student", {"dd": 64})
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_config("nope")


def test_smoothed_targets_sum_to_one_and_peak_on_gt() -> None:
    mask = torch.tensor([[True] * 6 + [False] * 2, [True] * 8])
    targets = smoothed_boundary_targets(torch.tensor([0, 4]), mask)
    torch.testing.assert_close(targets.sum(1), torch.ones(2))
    assert targets[0, 0] == pytest.approx(0.75, abs=1e-6)  # left neighbour missing: its share goes to GT
    assert targets[0, 1] == pytest.approx(0.25, abs=1e-6)
    assert targets[1, 4] == pytest.approx(0.5, abs=1e-6) and targets[1, 3] == pytest.approx(0.25, abs=1e-6)
    assert (targets[0, 6:] == 0).all()


def test_matching_labels_by_hand() -> None:
    mask = torch.ones(1, 16, dtype=torch.bool)
    labels = matching_labels(torch.tensor([3]), torch.tensor([11]), mask, ext=2)[0].tolist()
    o, b, i, e = OUTSIDE, BEGIN, INSIDE, END
    assert labels == [o, b, b, b, b, b, i, i, i, e, e, e, e, e, o, o]


@pytest.mark.parametrize("length", [1, 5, 64])
def test_conv_taps_equal_the_conv_kernels(length: int) -> None:
    """The shifted multiply-adds used under torch.compile compute the eager convolution."""
    from emtm.models.layers import DepthwiseSeparableConv

    torch.manual_seed(0)
    conv = DepthwiseSeparableConv(16, 7)
    x = torch.randn(3, length, 16)
    torch.testing.assert_close(conv.taps(x), conv(x), rtol=1e-5, atol=1e-5)


def test_char_windows_equal_the_char_convolutions() -> None:
    """The one-matmul character CNN used under torch.compile gives the four convolutions' result,
    for long, short, one-letter and empty (padding) words."""
    from emtm.models.layers import CharCNN

    torch.manual_seed(0)
    cnn = CharCNN(30, 12)
    ids = torch.randint(1, 30, (6, 9))
    for row, n_chars in enumerate([9, 5, 1, 0, 3, 4]):
        ids[row, n_chars:] = 0
    x = cnn.embed(ids)
    starts = (ids > 0) | ~(ids > 0).any(-1, keepdim=True)
    eager = cnn.pooled_convs(x, starts)
    assert eager.shape == (6, cnn.out_dim)
    torch.testing.assert_close(cnn.pooled_windows(x, starts), eager, rtol=1e-5, atol=1e-6)
    assert len(cnn.widths) == cnn.out_dim and not any("widths" in k for k in cnn.state_dict())


@pytest.mark.parametrize("options", [{}, {"positions": "relative"}, {"conv_kernel": 15}, {"char_dim": 0}])
def test_encoding_query_and_video_in_one_pass_equals_encoding_them_apart(options: dict) -> None:
    """GroundingEncoder.encode_pair (used under torch.compile) gives encode_video and encode_query's
    results, padded videos and queries included: no position sees across the gap."""
    torch.manual_seed(0)
    model = build_model("student", model_config("student", options), SPEC).eval()
    batch = collate(
        [make_item(7, 3, seed=1), make_item(25, 9, seed=2), make_item(SPEC.max_video_len, 5, seed=3)]
    )
    enc = model.encoder
    inputs = (batch["video"], batch["video_mask"], batch["words"], batch["chars"], batch["query_mask"])
    with torch.no_grad():
        video, query = enc.encode_pair(*inputs)
        torch.testing.assert_close(video, enc.encode_video(*inputs[:2]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(query, enc.encode_query(*inputs[2:]), rtol=1e-5, atol=1e-5)
    assert video.shape[1] == batch["video"].shape[1] and query.shape[1] == batch["words"].shape[1]


@pytest.mark.parametrize("name", ["student", "seqpan"])
def test_inference_writes_in_place_with_the_same_bits(name: str) -> None:
    """Without autograd, residual sums and padding masks are written into fresh outputs (layers.py
    add_residual, zero_padding_); with autograd they are not. Both give the same bits, and the
    in-place writes never touch a tensor a backward pass reads."""
    torch.manual_seed(0)
    model = build_model(name, model_config(name), SPEC).eval()
    batch = collate([make_item(7, 3, seed=1), make_item(25, 9, seed=2)])
    with torch.inference_mode():
        fast = model(batch)
    graph = model(batch)
    for key in fast:
        assert torch.equal(fast[key], graph[key]), key
    model.train()
    loss, _ = model.loss(model(batch), batch)
    loss.backward()  # autograd refuses a backward through a tensor modified in place after saving it
    assert all(p.grad is not None for p in model.head.parameters() if p.requires_grad)
