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
