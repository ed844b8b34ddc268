"""Span decoding: constraints, masking, top-k with NMS, batching, and clip -> seconds."""

import itertools

import numpy as np
import pytest
import torch

from emtm.engine.metrics import temporal_nms
from emtm.models.decode import decode_spans, spans_to_seconds

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _logits(*probs: list[float], device: str = "cpu") -> torch.Tensor:
    """Logits whose softmax gives ``probs`` (one row per sample)."""
    return torch.tensor(probs, dtype=torch.float32, device=device).log()


def _full_mask(b: int, n: int, device: str = "cpu") -> torch.Tensor:
    return torch.ones(b, n, dtype=torch.bool, device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_argmax_respects_end_after_start(device):
    ps = [0.05, 0.15, 0.1, 0.6, 0.1]
    pe = [0.1, 0.5, 0.1, 0.2, 0.1]
    # unconstrained best would be (3, 1) with 0.3; with j >= i: (3, 3) = 0.6 * 0.2 = 0.12
    spans, scores = decode_spans(
        _logits(ps, device=device), _logits(pe, device=device), _full_mask(1, 5, device)
    )
    assert spans.shape == (1, 1, 2) and spans.dtype == torch.long and scores.shape == (1, 1)
    assert spans.tolist() == [[[3, 3]]]
    assert scores.item() == pytest.approx(0.12, rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_max_len(device):
    ps = [0.6, 0.1, 0.1, 0.15, 0.05]
    pe = [0.05, 0.1, 0.1, 0.15, 0.6]
    args = (_logits(ps, device=device), _logits(pe, device=device), _full_mask(1, 5, device))
    spans, scores = decode_spans(*args)
    assert spans.tolist() == [[[0, 4]]] and scores.item() == pytest.approx(0.36, rel=1e-5)
    # j - i < 2: (3, 4) = 0.15 * 0.6 = 0.09 beats (0, 1) = 0.06
    spans, scores = decode_spans(*args, max_len=2)
    assert spans.tolist() == [[[3, 4]]] and scores.item() == pytest.approx(0.09, rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_ties_go_to_smallest_start_then_end(device):
    zeros = torch.zeros(1, 4, device=device)
    spans, scores = decode_spans(zeros, zeros, _full_mask(1, 4, device))
    assert spans.tolist() == [[[0, 0]]] and scores.item() == pytest.approx(1 / 16)
    # all ten spans tie; in order (0,0), (0,1), (0,2), (0,3), ...; NMS on [i, j + 1) at 0.5:
    # (0,1) has IoU 1/2 with (0,0): kept; (0,2) has 2/3 with (0,1): dropped; (0,3) has 1/2, 1/4: kept
    spans, _ = decode_spans(zeros, zeros, _full_mask(1, 4, device), top_k=3, nms_iou=0.5)
    assert spans.tolist() == [[[0, 0], [0, 1], [0, 3]]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("top_k", [1, 3])
def test_padding_never_wins(device, top_k):
    start = torch.tensor([[0.0, 1.0, 0.5, 0.2, 100.0, 100.0]], device=device)
    end = torch.tensor([[0.3, 0.1, 2.0, 0.0, 100.0, 100.0]], device=device)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]], device=device)  # 0/1 mask works too
    spans, scores = decode_spans(start, end, mask, top_k=top_k)
    assert spans.max().item() <= 3
    alone = decode_spans(start[:, :4], end[:, :4], _full_mask(1, 4, device), top_k=top_k)
    assert torch.equal(spans, alone[0])
    torch.testing.assert_close(scores, alone[1])
    if top_k == 1:
        assert spans.tolist() == [[[1, 2]]]  # argmax of start at 1, of end at 2


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_nms_and_padding_with_the_best(device):
    ps, pe = [0.8, 0.2], [0.3, 0.7]
    args = (_logits(ps, device=device), _logits(pe, device=device), _full_mask(1, 2, device))
    # scores: (0,1) 0.56, (0,0) 0.24, (1,1) 0.14; both others overlap (0,1) with IoU 1/2
    spans, scores = decode_spans(*args, top_k=5, nms_iou=0.4)
    assert spans.tolist() == [[[0, 1]] * 5]
    torch.testing.assert_close(scores.cpu(), torch.full((1, 5), 0.56))
    spans, scores = decode_spans(*args, top_k=3, nms_iou=0.5)  # IoU 1/2 is not above 0.5
    assert spans.tolist() == [[[0, 1], [0, 0], [1, 1]]]
    spans, scores = decode_spans(*args, top_k=3, nms_iou=None)
    assert spans.tolist() == [[[0, 1], [0, 0], [1, 1]]]
    torch.testing.assert_close(scores.cpu(), torch.tensor([[0.56, 0.24, 0.14]]))


def _reference(ps: np.ndarray, pe: np.ndarray, n: int, top_k: int, max_len, nms_iou, n_cand: int):
    """Plain numpy decoding of one sample: all spans, top n_cand, metrics.temporal_nms."""
    pairs = [(i, j) for i in range(n) for j in range(i, n) if max_len is None or j - i < max_len]
    scores = np.array([ps[i] * pe[j] for i, j in pairs])
    order = np.argsort(-scores, kind="stable")[:n_cand]
    windows = np.array([[pairs[o][0], pairs[o][1] + 1] for o in order], dtype=np.float64)
    keep = temporal_nms(windows, scores[order], nms_iou, top_k=top_k)
    return [list(pairs[order[k]]) for k in keep]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("max_len", [None, 6])
def test_top_k_matches_numpy_reference(device, max_len):
    gen = torch.Generator().manual_seed(1)
    lengths = [20, 13, 9]
    start = torch.randn(3, 20, generator=gen) * 2
    end = torch.randn(3, 20, generator=gen) * 2
    mask = torch.arange(20)[None, :] < torch.tensor(lengths)[:, None]
    spans, scores = decode_spans(start.to(device), end.to(device), mask.to(device), top_k=5, max_len=max_len)
    spans, scores = spans.cpu(), scores.cpu()
    assert spans.shape == (3, 5, 2) and scores.shape == (3, 5)
    for b, n in enumerate(lengths):
        ps = torch.softmax(start[b, :n].double(), 0).numpy()
        pe = torch.softmax(end[b, :n].double(), 0).numpy()
        ref = _reference(ps, pe, n, 5, max_len, 0.5, n_cand=50)
        assert len(ref) == 5
        assert spans[b].tolist() == ref
        s, e = spans[b, :, 0], spans[b, :, 1]
        assert (s <= e).all() and (e < n).all()
        if max_len is not None:
            assert (e - s < max_len).all()
        assert (scores[b][:-1] >= scores[b][1:]).all()
        np.testing.assert_allclose(scores[b].numpy(), ps[s.numpy()] * pe[e.numpy()], rtol=1e-5)
        for k1, k2 in itertools.combinations(range(5), 2):
            (a1, b1), (a2, b2) = spans[b, k1].tolist(), spans[b, k2].tolist()
            inter = max(0, min(b1, b2) + 1 - max(a1, a2))
            union = max(b1, b2) + 1 - min(a1, a2)
            assert inter / union <= 0.5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("top_k, max_len", [(1, None), (1, 3), (5, None), (5, 3)])
def test_alone_equals_batched(device, top_k, max_len):
    gen = torch.Generator().manual_seed(2)
    short_s, short_e = torch.randn(1, 7, generator=gen), torch.randn(1, 7, generator=gen)
    long_s, long_e = torch.randn(1, 16, generator=gen), torch.randn(1, 16, generator=gen)
    pad = torch.full((1, 9), 50.0)  # junk with large logits in the padding
    start = torch.cat([torch.cat([short_s, pad], 1), long_s]).to(device)
    end = torch.cat([torch.cat([short_e, pad], 1), long_e]).to(device)
    mask = (torch.arange(16)[None, :] < torch.tensor([[7], [16]])).to(device)
    spans, scores = decode_spans(start, end, mask, top_k=top_k, max_len=max_len)
    for b, (s, e) in enumerate([(short_s, short_e), (long_s, long_e)]):
        s, e = s.to(device), e.to(device)
        one_spans, one_scores = decode_spans(
            s, e, _full_mask(1, s.shape[1], device), top_k=top_k, max_len=max_len
        )
        assert torch.equal(spans[b : b + 1], one_spans)
        torch.testing.assert_close(scores[b : b + 1], one_scores)


def test_bad_arguments():
    x = torch.zeros(1, 4)
    with pytest.raises(ValueError):
        decode_spans(x, x, _full_mask(1, 4), top_k=0)
    with pytest.raises(ValueError):
        decode_spans(x, x, _full_mask(1, 4), max_len=0)


@pytest.mark.parametrize("device", DEVICES)
def test_spans_to_seconds(device):
    spans = torch.tensor([[[2, 4], [0, 9]], [[1, 2], [3, 3]]], device=device)
    n_valid = torch.tensor([10, 4], device=device)
    durations = torch.tensor([10.0, 10.0], device=device)
    out = spans_to_seconds(spans, n_valid, durations)
    assert out.shape == (2, 2, 2) and out.dtype == torch.float32
    expected = [[[2.0, 5.0], [0.0, 10.0]], [[2.5, 7.5], [7.5, 10.0]]]
    assert out.tolist() == expected
    out64 = spans_to_seconds(spans, n_valid, durations.double())
    assert out64.dtype == torch.float64 and out64.tolist() == expected
