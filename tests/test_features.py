import pickle

import numpy as np
import pytest

from emtm.data.features import (
    FeatureStore,
    H5Store,
    NpyDirStore,
    open_feature_store,
    resample_features,
    write_h5,
    write_npy_dir,
)
from emtm.errors import DataError

FEATS = {
    "vid_a": np.arange(12, dtype=np.float32).reshape(3, 4),
    "vid_b": np.ones((5, 4), dtype=np.float64),
}


def _make(kind, tmp_path, features):
    if kind == "npy":
        write_npy_dir(features, tmp_path / "feats")
        return open_feature_store(tmp_path / "feats")
    write_h5(features, tmp_path / "feats.h5")
    return open_feature_store(tmp_path / "feats.h5")


STORES = ["npy", "h5"]


@pytest.mark.parametrize("kind", STORES)
def test_store_basics(kind, tmp_path):
    store = _make(kind, tmp_path, FEATS)
    assert isinstance(store, NpyDirStore if kind == "npy" else H5Store)
    assert isinstance(store, FeatureStore)
    assert store.video_ids() == ["vid_a", "vid_b"]
    assert store.dim == 4
    assert "vid_a" in store and "vid_c" not in store
    a = store.load("vid_a")
    assert a.dtype == np.float32 and a.shape == (3, 4)
    np.testing.assert_array_equal(a, FEATS["vid_a"])
    assert store.load("vid_b").dtype == np.float32


@pytest.mark.parametrize("kind", STORES)
def test_store_missing_video(kind, tmp_path):
    store = _make(kind, tmp_path, FEATS)
    with pytest.raises(DataError, match="skip_missing_videos: true") as info:
        store.load("vid_zzz")
    assert "vid_zzz" in str(info.value) and str(store.path) in str(info.value)


@pytest.mark.parametrize("kind", STORES)
def test_store_wrong_dim(kind, tmp_path):
    store = _make(kind, tmp_path, {**FEATS, "vid_c": np.zeros((2, 7))})
    with pytest.raises(DataError, match=r"\(T, 4\)") as info:
        store.load("vid_c")
    message = str(info.value)
    assert "vid_c" in message and "(2, 7)" in message and str(store.path) in message


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)])
def test_store_wrong_ndim(kind, shape, tmp_path):
    store = _make(kind, tmp_path, {**FEATS, "vid_c": np.zeros(shape)})
    with pytest.raises(DataError, match=r"expected \(T, D\)"):
        store.load("vid_c")


@pytest.mark.parametrize("kind", STORES)
def test_store_empty_video(kind, tmp_path):
    store = _make(kind, tmp_path, {**FEATS, "vid_c": np.zeros((0, 4))})
    with pytest.raises(DataError, match="vid_c"):
        store.load("vid_c")


@pytest.mark.parametrize("kind", STORES)
def test_store_nan(kind, tmp_path):
    bad = np.zeros((4, 4))
    bad[0, 1] = np.nan
    bad[3, 3] = np.inf
    store = _make(kind, tmp_path, {**FEATS, "vid_c": bad})
    with pytest.raises(DataError, match="2 of 16") as info:
        store.load("vid_c")
    assert "vid_c" in str(info.value) and str(store.path) in str(info.value)


def test_store_dim_from_bad_first_video(tmp_path):
    store = _make("npy", tmp_path, {"aaa": np.zeros(3), **FEATS})
    with pytest.raises(DataError, match="aaa"):
        _ = store.dim


def test_npy_store_never_unpickles(tmp_path):
    (tmp_path / "feats").mkdir()
    np.save(tmp_path / "feats" / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    store = open_feature_store(tmp_path / "feats")
    with pytest.raises(DataError, match="obj"):
        store.load("obj")


def test_npy_store_ignores_other_files(tmp_path):
    write_npy_dir(FEATS, tmp_path / "feats")
    (tmp_path / "feats" / "feature_shapes.json").write_text('{"vid_a": [3, 4]}')
    assert open_feature_store(tmp_path / "feats").video_ids() == ["vid_a", "vid_b"]


def test_h5_store_reopen_and_pickle(tmp_path):
    write_h5(iter(FEATS.items()), tmp_path / "f.hdf5")
    store = open_feature_store(tmp_path / "f.hdf5")
    first = store.load("vid_a")
    np.testing.assert_array_equal(store.load("vid_b"), FEATS["vid_b"])
    store.close()
    np.testing.assert_array_equal(store.load("vid_a"), first)  # reopened on demand
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.load("vid_a"), first)
    store.close()
    clone.close()


def test_open_feature_store_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_feature_store(tmp_path / "nope")
    other = tmp_path / "feats.csv"
    other.write_text("x")
    with pytest.raises(DataError, match=r"\.npy.*\.h5") as info:
        open_feature_store(other)
    assert str(other) in str(info.value)
    not_h5 = tmp_path / "broken.h5"
    not_h5.write_text("not hdf5")
    with pytest.raises(DataError, match="HDF5"):
        open_feature_store(not_h5).load("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npy files"):
        open_feature_store(tmp_path / "empty").video_ids()


def test_resample_short_unchanged():
    feats = np.arange(8, dtype=np.float64).reshape(4, 2)
    out = resample_features(feats, 4)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, feats)
    np.testing.assert_array_equal(resample_features(feats, 10), feats)


def test_resample_hand_checked():
    feats = np.array([[0], [2], [4], [6], [8], [10]], dtype=np.float32)  # T=6 -> 3 bins of 2 rows
    out = resample_features(feats, 3)
    np.testing.assert_allclose(out, [[1], [5], [9]])
    # T=5 -> 2 bins: edges round(0), round(2.5)=2 (half to even), round(5)=5 -> rows [0,2), [2,5)
    out = resample_features(feats[:5], 2)
    np.testing.assert_allclose(out, [[1], [6]])


@pytest.mark.parametrize(("t", "max_len"), [(7, 3), (100, 64), (129, 128), (1000, 1), (65, 64)])
def test_resample_exact_length(t, max_len):
    feats = np.random.default_rng(0).standard_normal((t, 5)).astype(np.float32)
    out = resample_features(feats, max_len)
    assert out.shape == (max_len, 5) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_resample_preserves_mean():
    feats = np.random.default_rng(1).standard_normal((120, 8)).astype(np.float32)
    out = resample_features(feats, 30)
    np.testing.assert_allclose(out.mean(axis=0), feats.mean(axis=0), atol=1e-5)


def test_resample_bad_max_len():
    with pytest.raises(ValueError):
        resample_features(np.zeros((3, 2)), 0)
