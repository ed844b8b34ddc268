"""data.yaml loading, the validation hold-out, missing videos, and batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from emtm.config import load_data_config
from emtm.data.dataset import GroundingDataset, collate, hold_out_videos, load_splits, prepare
from emtm.data.records import Sample
from emtm.data.text import Vocab
from emtm.errors import ConfigError, DataError


def write_dataset(root: Path, missing: int = 0) -> Path:
    lines = [f"V{i:02d} {i % 5}.0 {i % 5 + 4}.5##a person opens the door number {i}" for i in range(20)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "test.txt").write_text("\n".join(lines[:4]) + "\n")
    (root / "durations.json").write_text("{" + ", ".join(f'"V{i:02d}": 20.0' for i in range(20)) + "}")
    (root / "feats").mkdir()
    for i in range(20 - missing):
        np.save(
            root / "feats" / f"V{i:02d}.npy", np.random.default_rng(i).normal(size=(20 + i, 8)).astype("f4")
        )
    cfg = {
        "format": "charades_sta",
        "splits": {"train": "train.txt", "test": "test.txt"},
        "durations": "durations.json",
        "features": "feats",
        "max_video_len": 24,
    }
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "data.yaml"


def test_relative_paths_resolve_against_the_yaml(tmp_path: Path) -> None:
    cfg = load_data_config(write_dataset(tmp_path))
    assert cfg.split_path("train") == (tmp_path / "train.txt").resolve()
    assert cfg.resolve(cfg.features) == (tmp_path / "feats").resolve()
    assert cfg.word_vector_spec() == "glove-6b-50d"
    with pytest.raises(ConfigError, match="split 'val' is not in data.yaml"):
        cfg.split_path("val")


def test_validation_holds_out_whole_videos_seeded(tmp_path: Path) -> None:
    samples = [Sample(f"v{i // 3}_{i % 3}", f"v{i // 3}", 10.0, 1.0, 2.0, "x") for i in range(60)]
    train, val = hold_out_videos(samples, 0.1, seed=0)
    assert len({s.video_id for s in val}) == 2  # 10% of 20 videos
    assert not {s.video_id for s in train} & {s.video_id for s in val}
    assert hold_out_videos(samples, 0.1, seed=0)[1] == val
    assert hold_out_videos(samples, 0.1, seed=1)[1] != val
    splits = load_splits(load_data_config(write_dataset(tmp_path)), seed=0)
    assert set(splits) == {"train", "val", "test"} and "held-out 10% of videos" in splits["val"].source
    assert len(splits["train"].samples) + len(splits["val"].samples) == 20


def test_missing_videos_fail_clearly_or_are_skipped_and_counted(tmp_path: Path) -> None:
    yaml_path = write_dataset(tmp_path, missing=3)
    with pytest.raises(DataError, match="have no features in .*skip_missing_videos: true"):
        prepare(load_data_config(yaml_path), seed=0)
    raw = yaml.safe_load(yaml_path.read_text())
    raw["skip_missing_videos"] = True
    yaml_path.write_text(yaml.safe_dump(raw))
    prepared = prepare(load_data_config(yaml_path), seed=0)
    total_missing = sum(split.n_missing_videos for split in prepared.splits.values())
    assert total_missing == 3
    assert all(
        s.video_id not in {"V17", "V18", "V19"} for split in prepared.splits.values() for s in split.samples
    )


def test_items_resample_long_videos_and_batches_pad_with_masks(tmp_path: Path) -> None:
    cfg = load_data_config(write_dataset(tmp_path))
    prepared = prepare(cfg, seed=0)
    vocab = Vocab.build(s.sentence for s in prepared.splits["train"].samples)
    dataset = GroundingDataset(prepared.splits["test"].samples, prepared.store, vocab, cfg)
    items = [dataset[i] for i in range(len(dataset))]
    assert [len(it["video"]) for it in items] == [20, 21, 22, 23]  # all <= max_video_len: kept as is
    long_item = GroundingDataset(
        [Sample("x", "V10", 20.0, 0.0, 4.5, "opens the door")], prepared.store, vocab, cfg
    )[0]
    assert long_item["video"].shape == (24, 8)  # 30 clips average-pooled into 24 bins
    batch = collate(items)
    assert batch["video"].shape == (4, 23, 8)
    assert batch["video_mask"].sum(1).tolist() == [20, 21, 22, 23]
    assert (batch["video"][0, 20:] == 0).all()
    assert batch["chars"].shape[2] == 16
    assert (batch["start_index"] <= batch["end_index"]).all()
