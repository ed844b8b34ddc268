"""Real pre-extracted features (../shared/data/real-features/): readers, `emtm predict`, `emtm data stats`.

The folder is read in place (never copied into the repository); every test here skips when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emtm.cli import main
from emtm.data.annotations import write_charades_sta, write_durations
from emtm.data.features import H5Store, NpyDirStore, open_feature_store, write_h5, write_npy_dir
from emtm.data.records import Sample
from emtm.data.stats import BUILTIN_I3D_RGB, SHOWN, features_stats, load_reference, open_features
from emtm.errors import DataError
from emtm.extract.extractor import FEATURES_JSON, FORMAT, FORMAT_VERSION, is_done, read_index
from helpers import train_tiny_student

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-features"
pytestmark = pytest.mark.skipif(
    not (REAL / "stats.json").is_file(), reason=f"real-feature fixtures not found at {REAL}"
)


def stats_json() -> dict:
    return json.loads((REAL / "stats.json").read_text())


def fixtures() -> dict[str, np.ndarray]:
    """Every fixture, by file name without .npy."""
    return {p.stem: np.load(p, allow_pickle=False) for p in sorted(REAL.glob("*.npy"))}


def i3d_fixtures() -> dict[str, np.ndarray]:
    """The 1024-d I3D fixtures (rgb and flow of two videos): one store can hold them together."""
    return {k: v for k, v in fixtures().items() if "_i3d_" in k}


# ------------------------------------------------------------------------------------------- readers
def test_the_fixtures_are_what_stats_json_says() -> None:
    files = stats_json()["files"]
    found = fixtures()
    assert sorted(f"{k}.npy" for k in found) == sorted(files) and len(found) == 19
    for name, x in found.items():
        assert x.dtype == np.float32 and list(x.shape) == files[f"{name}.npy"]["stats"]["shape"]
    assert len(i3d_fixtures()) == 8 and {x.shape[1] for x in i3d_fixtures().values()} == {1024}


def group_by_dim(features: dict[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    groups: dict[int, dict[str, np.ndarray]] = {}
    for name, x in features.items():
        groups.setdefault(x.shape[1], {})[name] = x
    return groups


def test_every_fixture_round_trips_through_an_npy_folder_and_an_hdf5_file(tmp_path: Path) -> None:
    """One store per feature dimension (a store holds one D), in both layouts; read back bit-exact."""
    groups = group_by_dim(fixtures())
    assert sorted(groups) == [128, 512, 1024, 2048]
    for dim, group in groups.items():
        write_npy_dir(group, tmp_path / f"npy{dim}")
        write_h5(group, tmp_path / f"f{dim}.h5")
        for path, kind in ((tmp_path / f"npy{dim}", NpyDirStore), (tmp_path / f"f{dim}.h5", H5Store)):
            store = open_feature_store(path)
            assert isinstance(store, kind) and store.dim == dim
            assert store.video_ids() == sorted(group)
            for name, x in group.items():
                assert name in store
                np.testing.assert_array_equal(store.load(name), x)


def test_an_emtm_extract_folder_of_the_fixtures_reads_back(tmp_path: Path) -> None:
    """The layout `emtm extract` writes: {vid}.npy plus a features.json index of the same shapes."""
    group = i3d_fixtures()
    out = tmp_path / "extracted"
    write_npy_dir(group, out)
    index = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "backbone": "i3d-rgb-flow (video_features)",
        "dim": 1024,
        "fps": 25.0,
        "clip_seconds": 0.96,
        "pooling": "mean of the frames sampled in each clip",
        "preprocessing": {},
        "videos": {
            k: {"source": f"{k}.mp4", "bytes": 1, "frames": 0, "clips": int(x.shape[0])}
            for k, x in group.items()
        },
    }
    (out / FEATURES_JSON).write_text(json.dumps(index))
    assert read_index(out) == index
    source = tmp_path / "video.mp4"
    source.write_bytes(b"x")
    assert all(is_done(out, k, source, index) for k in group)  # the recorded shapes are the files' shapes
    store = open_feature_store(out)
    assert store.video_ids() == sorted(group)  # features.json is not a video
    for name, x in group.items():
        np.testing.assert_array_equal(store.load(name), x)


def test_one_fixture_file_opens_as_a_store_of_one_video() -> None:
    name = "activitynet_v_GGSY1Qvo990_vggish"
    store = open_features(REAL / f"{name}.npy")
    assert store.video_ids() == [name] and store.dim == 128
    np.testing.assert_array_equal(store.load(name), np.load(REAL / f"{name}.npy"))


def test_the_fixture_folder_itself_is_refused_as_one_store_with_a_clear_error() -> None:
    store = open_feature_store(REAL)  # 19 files of four dimensions: not one store
    with pytest.raises(DataError, match=r"expected shape \(T, \d+\) like the other videos"):
        for video_id in store.video_ids():
            store.load(video_id)


# ------------------------------------------------------------------------------------------- predict
SENTENCES = ("a person jumps into the sand.", "the man runs down the track.", "someone opens the door.")


def real_i3d_dataset(folder: Path) -> Path:
    """A data.yaml whose videos are the 8 real I3D fixtures (1024-d), three sentences each."""
    group = i3d_fixtures()
    write_npy_dir(group, folder / "features")
    durations = {k: (35.155 if k.startswith("bmt_") else 18.094) for k in group}
    samples = {"train": [], "test": []}
    for i, (vid, duration) in enumerate(sorted(durations.items())):
        split = "test" if i % 4 == 3 else "train"
        for j, sentence in enumerate(SENTENCES):
            start = round(duration * (0.1 + 0.2 * j), 2)
            end = round(start + duration * 0.3, 2)
            samples[split].append(Sample(f"{vid}_{j}", vid, duration, start, end, sentence))
    for split, rows in samples.items():
        write_charades_sta(rows, folder / f"{split}.txt")
    write_durations(durations, folder / "durations.json")
    data = {
        "format": "charades_sta",
        "splits": {"train": "train.txt", "test": "test.txt"},
        "durations": "durations.json",
        "features": "features",
        "word_vectors": "glove-6b-50d",
        "max_video_len": 32,
    }
    (folder / "data.yaml").write_text(json.dumps(data))
    return folder / "data.yaml"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data.yaml of the real I3D fixtures, a tiny student trained on it for one epoch)."""
    root = tmp_path_factory.mktemp("real")
    data = real_i3d_dataset(root / "data")
    return data, train_tiny_student(data, root / "run", epochs=1)


def test_emtm_predict_grounds_every_test_query_of_the_real_features(real_run, tmp_path: Path) -> None:
    data, run = real_run
    preds = tmp_path / "preds.jsonl"
    args = ["predict", "--run", str(run), "--data", str(data), "--split", "test", "--out", str(preds)]
    assert main([*args, "--no-progress", "--device", "cpu"]) == 0
    records = [json.loads(line) for line in preds.read_text().splitlines()]
    test_videos = sorted(i3d_fixtures())[3::4]
    assert len(records) == len(test_videos) * len(SENTENCES)
    assert {r["vid"] for r in records} == set(test_videos)
    for record in records:
        duration = 35.155 if record["vid"].startswith("bmt_") else 18.094
        windows = record["pred_relevant_windows"]
        assert 1 <= len(windows) <= 5
        assert all(0 <= s < e <= duration + 1e-3 and np.isfinite(score) for s, e, score in windows)
    scores = tmp_path / "scores.json"
    evaluate = ["evaluate", "--preds", str(preds), "--data", str(data), "--split", "test"]
    assert main([*evaluate, "--json", str(scores)]) == 0
    assert json.loads(scores.read_text())["n_queries"] == len(records)


def test_emtm_predict_on_one_real_feature_file(real_run, capsys: pytest.CaptureFixture[str]) -> None:
    _, run = real_run
    features = REAL / "bmt_women_long_jump_i3d_rgb.npy"
    args = ["predict", "--run", str(run), "--features", str(features), "--duration", "35.155"]
    assert main([*args, "--query", SENTENCES[0], "--top-k", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert SENTENCES[0] in out


def test_a_model_of_another_dimension_is_refused_on_the_real_features(real_run, tmp_path: Path) -> None:
    _, run = real_run  # trained on 1024-d I3D
    args = ["predict", "--run", str(run), "--features", str(REAL / "activitynet_v_GGSY1Qvo990_vggish.npy")]
    assert main([*args, "--query", SENTENCES[0], "--device", "cpu"]) != 0


# ------------------------------------------------------------------------------------------- stats
def test_the_statistics_reproduce_stats_json_for_every_fixture() -> None:
    files = stats_json()["files"]
    for name in fixtures():
        ours, theirs = features_stats(REAL / f"{name}.npy"), files[f"{name}.npy"]["stats"]
        for key, value in theirs.items():
            if isinstance(value, float):
                assert ours[key] == pytest.approx(value, abs=1e-4), (name, key)
        assert (ours["rows"], ours["dim"]) == tuple(theirs["shape"])


def test_the_statistics_of_a_store_pool_its_videos(tmp_path: Path) -> None:
    """Over several videos: every value, row and pair counts once (checked on two fixtures by hand)."""
    a = np.load(REAL / "bmt_women_long_jump_i3d_rgb.npy").astype(np.float64)
    b = np.load(REAL / "activitynet_v_GGSY1Qvo990_i3d_rgb.npy").astype(np.float64)
    write_h5({"a": a, "b": b}, tmp_path / "two.h5")
    stats = features_stats(tmp_path / "two.h5")
    both = np.concatenate([a, b])
    assert stats["videos"] == 2 and stats["rows"] == 19
    assert stats["mean"] == pytest.approx(both.mean(), abs=1e-9)
    assert stats["std"] == pytest.approx(both.std(), abs=1e-9)
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b)]
    adjacent = np.concatenate([(u[:-1] * u[1:]).sum(1) for u in unit])  # 13 + 4 pairs, none across videos
    assert stats["cos_adjacent_mean"] == pytest.approx(adjacent.mean(), abs=1e-9)
    pairs = np.concatenate([(u @ u.T)[np.triu_indices(len(u), 1)] for u in unit])  # 91 + 10 pairs
    assert stats["cos_random_pairs_mean"] == pytest.approx(pairs.mean(), abs=1e-9)
    assert stats["row_l2_norm_mean"] == pytest.approx(np.linalg.norm(both, axis=1).mean(), abs=1e-9)


def test_the_default_reference_is_the_i3d_rgb_fixture_and_its_built_in_copy_agrees() -> None:
    label, reference = load_reference()
    assert label.startswith("activitynet_v_GGSY1Qvo990_i3d_rgb.npy")
    assert {k: reference[k] for k in BUILTIN_I3D_RGB} == BUILTIN_I3D_RGB


def test_emtm_data_stats_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_npy_dir(i3d_fixtures(), tmp_path / "i3d")
    out = tmp_path / "stats.json"
    assert main(["data", "stats", "--features", str(tmp_path / "i3d"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in SHOWN.values():
        assert label in printed
    assert "activitynet_v_GGSY1Qvo990_i3d_rgb.npy" in printed  # the default reference column
    written = json.loads(out.read_text())
    assert written["stats"]["videos"] == 8 and written["stats"]["dim"] == 1024
    assert written["stats"]["frac_negative"] == 0.0 and 0 < written["stats"]["frac_exact_zero"] < 0.1
    assert written["reference"]["stats"]["cos_adjacent_mean"] == pytest.approx(0.8991243687080843)


def test_emtm_data_stats_takes_a_reference_by_name_by_json_and_by_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = REAL / "activitynet_v_GGSY1Qvo990_clip_vit_b32.npy"
    args = ["data", "stats", "--features", str(clip)]
    assert main([*args, "--reference", "univtg_example_clip_vit_b32_0p5fps"]) == 0
    assert "univtg_example_clip_vit_b32_0p5fps.npy" in capsys.readouterr().out
    first = tmp_path / "first.json"
    assert main([*args, "--json", str(first)]) == 0
    second = tmp_path / "second.json"
    assert main([*args, "--reference", str(first), "--json", str(second)]) == 0
    assert json.loads(second.read_text())["reference"]["stats"] == json.loads(first.read_text())["stats"]
    assert main([*args, "--reference", str(REAL / "bmt_women_long_jump_vggish.npy")]) == 0
    assert "bmt_women_long_jump_vggish.npy" in capsys.readouterr().out


def test_emtm_data_stats_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", "--features", str(tmp_path / "missing")]) == 2
    assert "feature path does not exist" in capsys.readouterr().err
    clip = str(REAL / "activitynet_v_GGSY1Qvo990_clip_vit_b32.npy")
    assert main(["data", "stats", "--features", clip, "--reference", "no_such_fixture"]) == 2
    err = capsys.readouterr().err
    assert "--reference 'no_such_fixture'" in err and "bmt_women_long_jump_i3d_rgb" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    assert main(["data", "stats", "--features", clip, "--reference", str(bad)]) == 2
    assert "no statistics in this JSON" in capsys.readouterr().err
