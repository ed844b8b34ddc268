"""Clip grid: time <-> clip index, with hand-computed cases."""

from fractions import Fraction

import numpy as np
import pytest

from emtm.data.grid import index_to_time, time_to_index


def _brute_force(start: float, end: float, duration: float, n: int) -> tuple[int, int]:
    """Exact (rational) exhaustive search; ties to the smallest s, then the smallest e."""
    best, best_iou = None, Fraction(0)
    x, y, d = Fraction(start), Fraction(end), Fraction(duration)
    for s in range(n):
        for e in range(s, n):
            a, b = s * d / n, (e + 1) * d / n
            inter = min(b, y) - max(a, x)
            iou = inter / (max(b, y) - min(a, x)) if inter > 0 else Fraction(0)
            if iou > best_iou:
                best, best_iou = (s, e), iou
    return best


def test_hand_case_exact_clip_boundaries():
    assert time_to_index(2.0, 5.0, 10.0, 10) == (2, 4)
    assert index_to_time(2, 4, 10.0, 10) == (2.0, 5.0)


def test_hand_cases_partial_overlap():
    # 2.5 s clips: (1, 2) = [2.5, 7.5] gives 3 / 5 = 0.6; (1, 1) = [2.5, 5] gives 2 / 3.5; (2, 2) 1 / 4.5
    assert time_to_index(3.0, 6.0, 10.0, 4) == (1, 2)
    # (1, 1) = [2.5, 5] gives 1 / 2.5 = 0.4, the best
    assert time_to_index(3.0, 4.0, 10.0, 4) == (1, 1)
    # 1 s clips: (0, 0) gives 0.6 / 1.2 = 0.5, (0, 1) gives 0.8 / 2 = 0.4, (1, 1) gives 0.2 / 1.6
    assert time_to_index(0.4, 1.2, 10.0, 10) == (0, 0)
    # a moment running past the video: (8, 9) gives 1.5 / 4 = 0.375 > (9, 9) with 1 / 3
    assert time_to_index(8.5, 12.0, 10.0, 10) == (8, 9)


def test_whole_video_and_single_clip():
    assert time_to_index(0.0, 10.0, 10.0, 10) == (0, 9)
    assert time_to_index(0.0, 10.0, 10.0, 1) == (0, 0)
    assert time_to_index(3.0, 4.0, 10.0, 1) == (0, 0)


def test_fallback_when_every_iou_is_zero():
    assert time_to_index(2.0, 2.0, 10.0, 10) == (2, 2)  # zero-length moment on a boundary
    assert time_to_index(3.5, 3.5, 10.0, 10) == (3, 3)
    assert time_to_index(10.0, 10.0, 10.0, 10) == (9, 9)  # clamped to the last clip
    assert time_to_index(12.0, 15.0, 10.0, 10) == (9, 9)  # entirely after the video


def test_round_trip_every_pair():
    n, duration = 8, 16.0
    for s in range(n):
        for e in range(s, n):
            assert time_to_index(*index_to_time(s, e, duration, n), duration, n) == (s, e)


def test_matches_exact_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        duration = float(rng.uniform(1.0, 60.0))
        a, b = sorted(rng.uniform(0.0, duration, size=2).tolist())
        if b - a < 1e-6:
            continue
        s, e = time_to_index(a, b, duration, n)
        assert s <= e
        assert (s, e) == _brute_force(a, b, duration, n)


def test_index_to_time_hand_case():
    assert index_to_time(1, 2, 10.0, 4) == (2.5, 7.5)
    assert index_to_time(0, 0, 3.0, 3) == (0.0, 1.0)


@pytest.mark.parametrize("duration, n", [(0.0, 10), (-1.0, 10), (10.0, 0)])
def test_bad_grid(duration, n):
    with pytest.raises(ValueError):
        time_to_index(0.0, 1.0, duration, n)
    with pytest.raises(ValueError):
        index_to_time(0, 0, duration, n)
