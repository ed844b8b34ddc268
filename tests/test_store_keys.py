"""Feature stores keyed as real feature files are: 2D-TAN's TACoS HDF5 keys videos "s13-d21.avi".

The TACoS reader strips ".avi" from the annotation key (video id "s13-d21"); every store finds the
video under its id or under the key with a video-file extension (emtm.data.records.without_video_suffix).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from emtm.cli import main
from emtm.data.dataset import filter_missing, load_splits
from emtm.data.features import H5Store, NpyDirStore, write_h5, write_npy_dir
from emtm.data.records import without_video_suffix
from emtm.errors import DataError

FPS = 25.0
WORDS = ["person", "cuts", "the", "cucumber", "onion", "takes", "out", "knife", "washes", "plate"]


def tacos_stand_in(folder: Path, n_videos: int = 8, dim: int = 8) -> Path:
    """train.json / test.json in the 2D-TAN TACoS layout (frames, fps, num_frames, "sXX-dYY.avi" keys) and
    `tall_c3d_features.hdf5` written by walking those keys, as 2D-TAN's is; returns data.yaml."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    features, splits = {}, {"train": {}, "val": {}, "test": {}}
    for v in range(n_videos):
        key = f"s{13 + v}-d{21 + v}.avi"
        n_clips = 24
        num_frames = n_clips * 16  # C3D: a feature per 16 frames
        timestamps, sentences = [], []
        for _ in range(4):
            start = int(rng.integers(0, num_frames // 2))
            timestamps.append([start, start + int(rng.integers(32, num_frames // 2))])
            sentences.append(" ".join(rng.choice(WORDS, size=5)))
        split = "test" if v >= n_videos - 2 else "val" if v == n_videos - 3 else "train"
        splits[split][key] = {
            "timestamps": timestamps,
            "sentences": sentences,
            "fps": FPS,
            "num_frames": num_frames,
        }
        features[key] = rng.normal(size=(n_clips, dim)).astype(np.float32)
    for split, records in splits.items():
        (folder / f"{split}.json").write_text(json.dumps(records))
    write_h5(features, folder / "tall_c3d_features.hdf5")
    data = {
        "format": "tacos",
        "splits": {"train": "train.json", "val": "val.json", "test": "test.json"},
        "features": "tall_c3d_features.hdf5",
        "max_video_len": 16,
    }
    (folder / "data.yaml").write_text(yaml.safe_dump(data))
    return folder / "data.yaml"


def test_the_rule() -> None:
    assert without_video_suffix("s13-d21.avi") == "s13-d21"
    assert without_video_suffix("v1.MP4") == "v1"
    assert without_video_suffix("s13-d21") == "s13-d21"
    assert without_video_suffix(".avi") == ".avi"  # nothing would be left
    assert without_video_suffix("j7rJstUseKg_360.0_510.0") == "j7rJstUseKg_360.0_510.0"


@pytest.mark.parametrize("layout", ["h5", "npy"])
def test_a_store_finds_a_video_under_its_id_or_its_annotation_key(tmp_path: Path, layout: str) -> None:
    feats = {"s13-d21.avi": np.ones((3, 2)), "v2": np.zeros((4, 2))}
    if layout == "h5":
        write_h5(feats, tmp_path / "f.h5")
        store = H5Store(tmp_path / "f.h5")
    else:
        write_npy_dir(feats, tmp_path / "f")
        store = NpyDirStore(tmp_path / "f")
    assert "s13-d21" in store and "s13-d21.avi" in store  # the stripped id and the annotation key
    assert store.load("s13-d21").shape == (3, 2) and store.key_of("s13-d21") == "s13-d21.avi"
    assert store.load("v2.mp4").shape == (4, 2)  # a Lighthouse vid with an extension finds "v2"
    assert "s13-d22" not in store and "v2.avi.x" not in store
    with pytest.raises(
        DataError, match=r"no features for video 's13-d22' .*keys look like \['s13-d21.avi', 'v2'\]"
    ):
        store.load("s13-d22")


def test_an_exact_key_wins_and_two_matches_are_an_error(tmp_path: Path) -> None:
    write_h5({"a": np.ones((2, 2)), "a.avi": np.zeros((3, 2)), "a.mp4": np.zeros((5, 2))}, tmp_path / "f.h5")
    store = H5Store(tmp_path / "f.h5")
    assert store.load("a").shape == (2, 2) and store.load("a.avi").shape == (3, 2)
    with pytest.raises(DataError, match=r"video 'a.mkv' matches 3 keys of this store"):
        store.load("a.mkv")


def test_the_no_features_error_shows_the_stores_keys(tmp_path: Path) -> None:
    data_yaml = tacos_stand_in(tmp_path)
    write_h5({f"video{i}": np.ones((2, 8)) for i in range(5)}, tmp_path / "tall_c3d_features.hdf5")
    from emtm.config import load_data_config

    cfg = load_data_config(data_yaml)
    split = load_splits(cfg, 0, ("train",))["train"]
    with pytest.raises(DataError) as info:
        filter_missing(split, H5Store(tmp_path / "tall_c3d_features.hdf5"), False, "train")
    message = str(info.value)
    assert (
        "5 video(s) of split 'train' have no features" in message and "e.g. ['s13-d21', 's14-d22'" in message
    )
    assert "the store's keys look like ['video0', 'video1', 'video2']" in message


def test_train_predict_export_and_evaluate_on_a_2d_tan_tacos_store(tmp_path: Path, capsys) -> None:
    data_yaml = tacos_stand_in(tmp_path / "tacos")
    run = tmp_path / "run"
    common = ["--no-progress", "--device", "cpu"]
    tiny = ["--set", "model_options.d=32", "--set", "model_options.n_heads=4", "--set", "run.threads=1"]
    assert main(["train", "--data", str(data_yaml), "--out", str(run), "--epochs", "1", *tiny, *common]) == 0
    preds = tmp_path / "preds.jsonl"
    assert main(["predict", "--run", str(run), "--data", str(data_yaml), "--out", str(preds), *common]) == 0
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 8 and lines[0]["vid"] == "s19-d27"  # the test split's 2 videos x 4 queries
    assert main(["evaluate", "--preds", str(preds), "--data", str(data_yaml)]) == 0
    cache = tmp_path / "teacher.h5"
    assert (
        main(
            ["teachers", "export", "--data", str(data_yaml), "--run", str(run), "--out", str(cache), *common]
        )
        == 0
    )
    from emtm.distill.cache import TeacherCache

    with TeacherCache(cache) as teacher:
        assert len(teacher) == 20 and teacher.get("s13-d21_0").shape == (2, 16)


def test_the_tacos_recipe_reads_a_2d_tan_tacos_store(tmp_path: Path) -> None:
    """`emtm recipe tacos` writes its data.yaml from the recipe and reads it like `emtm train` (prepare);
    the whole pipeline on a store like this is what test_recipe.py runs, here only its data step."""
    from emtm.config import load_data_config
    from emtm.data.dataset import prepare
    from emtm.experiments.recipe import load_recipe, write_data_yaml

    folder = tacos_stand_in(tmp_path / "tacos").parent
    data_yaml = write_data_yaml(
        load_recipe("tacos"), folder, folder / "tall_c3d_features.hdf5", "glove-6b-50d", tmp_path / "run"
    )
    prepared = prepare(load_data_config(data_yaml), seed=0)
    assert {k: len(v.samples) for k, v in prepared.splits.items()} == {"train": 20, "val": 4, "test": 8}
    assert prepared.store.load(prepared.splits["val"].samples[0].video_id).shape == (24, 8)
