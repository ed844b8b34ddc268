"""Unifying teacher outputs: every rule gives proper start/end distributions that land where the teacher
points, on seeded random inputs over many shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emtm.distill.unify import (
    RULES,
    map_to_dist,
    proposals_to_dist,
    regression_to_dist,
    resample_dist,
    span_to_dist,
    unify,
)


def _mask(lengths: list[int], lmax: int | None = None) -> torch.Tensor:
    lmax = max(lengths) if lmax is None else lmax
    return torch.arange(lmax).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _lengths(g: torch.Generator, b: int, hi: int) -> list[int]:
    lengths = torch.randint(1, hi + 1, (b,), generator=g).tolist()
    lengths[0] = 1  # every batch holds a sample with a single clip
    return lengths


def _native(form: str, g: torch.Generator, b: int, lmax: int, dtype: torch.dtype = torch.float32) -> dict:
    """Random native output of a teacher of the given form (span teachers on the student grid)."""
    if form == "span":
        return {k: (3 * torch.randn(b, lmax, generator=g)).to(dtype) for k in ("start_logits", "end_logits")}
    if form == "2dmap":
        n = int(torch.randint(1, 9, (1,), generator=g))
        scores = torch.rand(b, n, n, generator=g).to(dtype)
        map_mask = torch.ones(n, n, dtype=torch.bool).triu().expand(b, n, n)
        return {"map_scores": scores, "map_mask": map_mask}
    if form == "proposals":
        k = int(torch.randint(1, 6, (1,), generator=g))
        windows = torch.rand(b, k, 2, generator=g).sort(-1).values.to(dtype)
        return {"windows": windows, "scores": torch.rand(b, k, generator=g).to(dtype)}
    return {"window": torch.rand(b, 2, generator=g).sort(-1).values.to(dtype)}


def _assert_proper(p: torch.Tensor, mask: torch.Tensor) -> None:
    assert p.dtype == torch.float32 and p.shape == mask.shape
    assert not torch.isnan(p).any()
    assert (p >= 0).all()
    assert (p[~mask] == 0).all(), "padding never receives mass"
    torch.testing.assert_close(p.sum(1), torch.ones(p.shape[0]), atol=1e-5, rtol=0)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


# --------------------------------------------------------------------------- proper distributions


@pytest.mark.parametrize("form", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_rule_gives_proper_distributions(form: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(RULES.index(form))
    for _ in range(40):
        b = int(torch.randint(1, 6, (1,), generator=g))
        lengths = _lengths(g, b, 20)
        mask = _mask(lengths, max(lengths) + int(torch.randint(0, 3, (1,), generator=g)))
        for kwargs in ({}, {"temperature": 0.3, "sigma_frac": 1e-4, "map_reduce": "max"}):
            start, end = unify(form, _native(form, g, b, mask.shape[1], dtype), mask, **kwargs)
            _assert_proper(start, mask)
            _assert_proper(end, mask)


def test_single_clip_samples_get_all_the_mass():
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(3, 1, dtype=torch.bool)
    for form in RULES:
        start, end = unify(form, _native(form, g, 3, 1), mask)
        assert torch.equal(start, torch.ones(3, 1)) and torch.equal(end, torch.ones(3, 1))


def test_degenerate_inputs_never_give_nan():
    mask = _mask([3, 1, 4])
    inf = torch.full((3, 4), float("-inf"))
    for p in span_to_dist(inf, inf, mask):
        _assert_proper(p, mask)
        torch.testing.assert_close(p[0, :3], torch.full((3,), 1 / 3))  # nothing known -> uniform
    zero_scores = torch.zeros(3, 2)
    windows = torch.tensor([[0.1, 0.4], [0.2, 0.9]]).expand(3, 2, 2)
    for valid in (None, torch.zeros(3, 2, dtype=torch.bool)):
        for p in proposals_to_dist(windows, zero_scores, mask, valid=valid):
            _assert_proper(p, mask)
    map_mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    for p in map_to_dist(torch.rand(3, 4, 4), map_mask, mask):
        _assert_proper(p, mask)
    for dst in (_mask([7, 2, 1]), _mask([1, 1, 1])):
        for p in (torch.zeros(3, 4), torch.rand(3, 4)):  # all-zero input -> uniform
            _assert_proper(resample_dist(p, mask, dst), dst)


# --------------------------------------------------------------------------- mass lands on the best moment


def test_span_peak_is_the_argmax_on_the_same_and_on_other_grids():
    g = torch.Generator().manual_seed(2)
    for _ in range(50):
        n = int(torch.randint(1, 16, (1,), generator=g))
        i, j = sorted(torch.randint(0, n, (2,), generator=g).tolist())
        start_logits, end_logits = torch.randn(2, 1, n, generator=g)
        start_logits[0, i] += 10
        end_logits[0, j] += 10
        native = {"start_logits": start_logits, "end_logits": end_logits}
        src = torch.ones(1, n, dtype=torch.bool)
        start, end = unify("span", native, src)
        assert (int(start.argmax()), int(end.argmax())) == (i, j)
        start, end = unify("span", native, torch.ones(1, 2 * n, dtype=torch.bool), src_mask=src)
        assert (int(start.argmax()), int(end.argmax())) == (2 * i, 2 * j + 1)


@pytest.mark.parametrize("reduce", ["sum", "max"])
@pytest.mark.parametrize("as_logits", [False, True])
def test_map_best_cell_lands_on_the_matching_student_span(reduce: str, as_logits: bool):
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        n = int(torch.randint(1, 17, (1,), generator=g))
        i, j = sorted(torch.randint(0, n, (2,), generator=g).tolist())
        map_mask = torch.ones(n, n, dtype=torch.bool).triu().unsqueeze(0)
        scores = 0.02 * torch.rand(1, n, n, generator=g)
        scores[0, i, j] = 0.99
        native = {"map_scores": scores.log() if as_logits else scores, "map_mask": map_mask}
        if as_logits:
            native["map_is_logits"] = torch.tensor(True)
        for factor, expected in ((1, (i, j)), (2, (2 * i, 2 * j + 1))):
            dst = torch.ones(1, factor * n, dtype=torch.bool)
            start, end = unify("2dmap", native, dst, map_reduce=reduce)
            assert (int(start.argmax()), int(end.argmax())) == expected


def test_map_best_cell_survives_a_coarser_student_grid():
    g = torch.Generator().manual_seed(4)
    for _ in range(50):
        n = int(torch.randint(2, 33, (1,), generator=g))
        length = int(torch.randint(1, n, (1,), generator=g))
        i, j = sorted(torch.randint(0, n, (2,), generator=g).tolist())
        scores = 1e-4 * torch.rand(1, n, n, generator=g)
        scores[0, i, j] = 0.99
        map_mask = torch.ones(n, n, dtype=torch.bool).triu().unsqueeze(0)
        start, end = map_to_dist(scores, map_mask, torch.ones(1, length, dtype=torch.bool))
        # the start i/n lies between two student starts k/L, the end (j+1)/n between two ends (k+1)/L
        assert abs(int(start.argmax()) - i * length / n) <= 1
        assert abs(int(end.argmax()) + 1 - (j + 1) * length / n) <= 1


def _snapped_window(g: torch.Generator, length: int) -> tuple[float, float]:
    """A window [s, e] within 0.3 clip of clip boundaries a < b (so the nearest clips are unambiguous)."""
    a = int(torch.randint(0, length, (1,), generator=g))
    b = int(torch.randint(a + 1, length + 1, (1,), generator=g))
    jitter = ((torch.rand(2, generator=g) - 0.5) * 0.6).tolist()
    return min(max((a + jitter[0]) / length, 0.0), 1.0), min(max((b + jitter[1]) / length, 0.0), 1.0)


def test_top_proposal_and_regression_land_on_the_nearest_clips():
    g = torch.Generator().manual_seed(5)
    for _ in range(100):
        length = int(torch.randint(1, 30, (1,), generator=g))
        k = int(torch.randint(1, 6, (1,), generator=g))
        s, e = _snapped_window(g, length)
        windows = torch.rand(1, k, 2, generator=g).sort(-1).values
        windows[0, 0] = torch.tensor([s, e])
        scores = torch.cat([torch.ones(1, 1), 0.01 * torch.rand(1, k - 1, generator=g)], 1)
        expected = (round(s * length), max(round(e * length) - 1, 0))
        dst = torch.ones(1, length, dtype=torch.bool)
        start, end = proposals_to_dist(windows, scores, dst, sigma_frac=0.3 / length)
        assert (int(start.argmax()), int(end.argmax())) == expected
        start, end = regression_to_dist(windows[:, 0], dst, sigma_frac=0.3 / length)
        assert (int(start.argmax()), int(end.argmax())) == expected
        # far below a clip the Gaussians underflow: a one-hot at the nearest clip (of the nearest window)
        for sigma in (1e-3 / length, 1e-7):
            for start, end in (
                regression_to_dist(windows[:, 0], dst, sigma_frac=sigma),
                proposals_to_dist(windows[:, :1], scores[:, :1], dst, sigma_frac=sigma),
            ):
                assert (int(start.argmax()), int(end.argmax())) == expected
                assert start.max() == 1 and end.max() == 1


def test_invalid_proposals_are_ignored():
    mask = torch.ones(1, 10, dtype=torch.bool)
    windows = torch.tensor([[[0.1, 0.3], [0.6, 0.9]]])
    scores = torch.tensor([[0.1, 0.9]])
    valid = torch.tensor([[True, False]])
    start, end = proposals_to_dist(windows, scores, mask, sigma_frac=0.02, valid=valid)
    assert (int(start.argmax()), int(end.argmax())) == (1, 2)
    only = proposals_to_dist(windows[:, :1], scores[:, :1], mask, sigma_frac=0.02)
    torch.testing.assert_close((start, end), only)


# --------------------------------------------------------------------------- resampling


def _peaked(g: torch.Generator, n: int) -> tuple[torch.Tensor, int]:
    peak = int(torch.randint(0, n, (1,), generator=g))
    logits = 0.5 * torch.randn(n, generator=g)
    logits[peak] += 8
    return torch.softmax(logits, 0), peak


def test_resampling_keeps_the_argmax_within_one_clip_of_the_coarser_grid():
    """With clip k of an n grid at k / (n - 1), |argmax_dst / (n_dst - 1) - argmax_src / (n_src - 1)| is at
    most one clip of the coarser grid, 1 / (min(n_src, n_dst) - 1)."""
    g = torch.Generator().manual_seed(6)
    for _ in range(300):
        n_src, n_dst = torch.randint(2, 80, (2,), generator=g).tolist()
        p, peak = _peaked(g, n_src)
        q = resample_dist(p.unsqueeze(0), torch.ones(1, n_src, dtype=torch.bool), torch.ones(1, n_dst).bool())
        gap = abs(int(q.argmax()) / (n_dst - 1) - peak / (n_src - 1))
        assert gap <= 1 / (min(n_src, n_dst) - 1) + 1e-9, (n_src, n_dst, peak, int(q.argmax()))


def test_resampling_up_is_linear_interpolation_with_aligned_corners():
    g = torch.Generator().manual_seed(7)
    for _ in range(50):
        n_src = int(torch.randint(1, 20, (1,), generator=g))
        n_dst = n_src + int(torch.randint(0, 30, (1,), generator=g))
        p = torch.rand(1, n_src, generator=g)
        p /= p.sum()
        ref = F.interpolate(p.unsqueeze(0), size=n_dst, mode="linear", align_corners=True)[0]
        q = resample_dist(p, torch.ones(1, n_src, dtype=torch.bool), torch.ones(1, n_dst, dtype=torch.bool))
        torch.testing.assert_close(q, ref / ref.sum(), atol=1e-6, rtol=1e-5)


def test_resampling_to_the_same_grid_is_the_identity_and_batches_mixed_sizes():
    g = torch.Generator().manual_seed(8)
    for _ in range(30):
        b = int(torch.randint(1, 6, (1,), generator=g))
        src, dst = _mask(_lengths(g, b, 25)), _mask(_lengths(g, b, 25))
        p = span_to_dist(torch.randn(src.shape, generator=g), torch.zeros(src.shape), src)[0]
        for align in ("corners", "start", "end"):
            torch.testing.assert_close(resample_dist(p, src, src, align), p)
            q = resample_dist(p, src, dst, align)
            _assert_proper(q, dst)
            for row in range(b):  # batched == one sample at a time
                n_src, n_dst = int(src[row].sum()), int(dst[row].sum())
                alone = resample_dist(
                    p[row : row + 1, :n_src], src[row : row + 1, :n_src], dst[row : row + 1, :n_dst], align
                )
                torch.testing.assert_close(q[row, :n_dst], alone[0], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="align"):
        resample_dist(p, src, dst, "middle")


# --------------------------------------------------------------------------- temperature, reduce, padding


def test_higher_temperature_gives_a_flatter_span_distribution():
    g = torch.Generator().manual_seed(9)
    for _ in range(30):
        lengths = [1] + [max(n, 2) for n in _lengths(g, 3, 20)]
        mask = _mask(lengths)
        logits = 3 * torch.randn(mask.shape, generator=g)
        entropies = [_entropy(span_to_dist(logits, logits, mask, t)[0]) for t in (0.25, 0.5, 1.0, 2.0, 4.0)]
        for low, high in zip(entropies, entropies[1:]):
            assert (high[1:] > low[1:]).all()  # L = 1 has zero entropy at any temperature
            torch.testing.assert_close(high[0], torch.tensor(0.0))
    with pytest.raises(ValueError, match="temperature"):
        span_to_dist(logits, logits, mask, 0.0)


def test_map_reduce_max_differs_from_sum_and_is_checked():
    scores = torch.full((1, 4, 4), 0.1)
    scores[0, 0, 3] = 0.5  # one fairly good long moment ...
    scores[0, 2, 2:] = 0.45  # ... against a row of several decent ones
    map_mask = torch.ones(4, 4, dtype=torch.bool).triu().unsqueeze(0)
    dst = torch.ones(1, 4, dtype=torch.bool)
    assert int(map_to_dist(scores, map_mask, dst, reduce="sum")[0].argmax()) == 2
    start, end = map_to_dist(scores, map_mask, dst, reduce="max")
    assert int(start.argmax()) == 0
    _assert_proper(start, dst)
    _assert_proper(end, dst)
    with pytest.raises(ValueError, match="reduce"):
        map_to_dist(scores, map_mask, dst, reduce="mean")


@pytest.mark.parametrize("form", RULES)
def test_a_sample_alone_equals_it_padded_in_a_batch(form: str):
    g = torch.Generator().manual_seed(10 + RULES.index(form))
    for _ in range(20):
        b = int(torch.randint(2, 6, (1,), generator=g))
        lengths = _lengths(g, b, 20)
        mask = _mask(lengths, max(lengths) + 2)
        native = _native(form, g, b, mask.shape[1])
        extra = {}
        if form == "proposals":  # pad the proposals of one sample too
            native["valid"] = torch.ones_like(native["scores"], dtype=torch.bool)
            if native["scores"].shape[1] > 1:
                native["valid"][1, -1] = False
        if form == "span":  # a teacher on its own grid, resampled onto the student's
            extra["src_mask"] = _mask(_lengths(g, b, 20), mask.shape[1])
        for kwargs in ({}, {"map_reduce": "max", "temperature": 0.5, "sigma_frac": 0.01}):
            batched = unify(form, native, mask, **kwargs, **extra)
            for row in range(b):
                n = lengths[row]
                one = {k: v[row : row + 1] for k, v in native.items()}
                one_extra = {}
                if form == "span":
                    n_src = int(extra["src_mask"][row].sum())
                    one = {k: v[:, :n_src] for k, v in one.items()}
                    one_extra["src_mask"] = torch.ones(1, n_src, dtype=torch.bool)
                if form == "proposals":
                    keep = one.pop("valid")[0]
                    one = {k: v[:, keep] for k, v in one.items()}
                alone = unify(form, one, torch.ones(1, n, dtype=torch.bool), **kwargs, **one_extra)
                for got, ref in zip(batched, alone):
                    torch.testing.assert_close(got[row, :n], ref[0], atol=1e-6, rtol=1e-5)
                    assert (got[row, n:] == 0).all()


def test_bad_form_and_sigma_raise():
    mask = torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="span"):
        unify("heatmap", {}, mask)
    with pytest.raises(ValueError, match="sigma_frac"):
        regression_to_dist(torch.tensor([[0.2, 0.5]]), mask, sigma_frac=0.0)
