"""emtm.data.stats without the real-feature folder: the built-in reference, and arrays checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emtm.data import stats
from emtm.errors import DataError


def test_without_the_shared_folder_the_default_reference_is_the_built_in_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "REAL_FEATURES", tmp_path / "absent")
    label, reference = stats.load_reference()
    assert label == "activitynet_v_GGSY1Qvo990_i3d_rgb.npy (built-in copy of stats.json)"
    assert reference == stats.BUILTIN_I3D_RGB
    with pytest.raises(DataError, match="not a file of .*absent"):
        stats.load_reference("bmt_women_long_jump_i3d_rgb")


def test_array_stats_by_hand() -> None:
    x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]], dtype=np.float32)
    s = stats.array_stats(x)
    assert s["mean"] == pytest.approx(2 / 6) and s["std"] == pytest.approx(np.std(x))
    assert s["frac_exact_zero"] == pytest.approx(2 / 6) and s["frac_negative"] == pytest.approx(1 / 6)
    assert s["row_l2_norm_mean"] == pytest.approx((1 + 2**0.5 + 1) / 3)
    assert s["cos_adjacent_mean"] == pytest.approx((2**-0.5 + -(2**-0.5)) / 2)
    assert s["cos_random_pairs_mean"] == pytest.approx((2**-0.5 + 0.0 - 2**-0.5) / 3)
    with pytest.raises(ValueError, match=r"expected a \(T, D\) array"):
        stats.array_stats(np.zeros(3))


def test_advice_to_standardise_only_for_clips_that_share_a_large_mean() -> None:
    rng = np.random.default_rng(0)
    centred = rng.normal(size=(40, 64)).astype(np.float32)
    assert stats.input_advice(stats.array_stats(centred)) is None
    shared = np.abs(rng.normal(size=64))  # a positive mean per dimension, as real I3D features have
    i3d_like = (shared + 0.3 * np.abs(rng.normal(size=(40, 64)))).astype(np.float32)
    advice = stats.input_advice(stats.array_stats(i3d_like))
    assert advice is not None and "model_options.video_norm=standardize" in advice
    assert stats.input_advice(stats.BUILTIN_I3D_RGB) is not None  # the real reference itself
