"""Writing the synthetic benchmark: annotation files, durations, features (npy folder or HDF5) and
its data.yaml (`generate`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import numpy as np
import yaml

from emtm.data.annotations import write_charades_sta, write_durations
from emtm.data.features import write_h5, write_npy_dir
from emtm.data.synth.config import SynthConfig, check_both_splits, preset_name
from emtm.data.synth.rendering import make_prototypes, render_video
from emtm.data.synth.scripts import make_scripts, script_samples
from emtm.errors import ConfigError
from emtm.io import atomic_open

PathLike = str | os.PathLike[str]
FEATURE_FORMATS = ("npy", "h5")
_CHUNK = 256  # videos per write_npy_dir call: memory stays small


def _write_features(
    items: Iterator[tuple[str, np.ndarray]], out_dir: Path, feature_format: str, total: int, progress: bool
) -> str:
    """Write (video_id, features) pairs as features/{vid}.npy or features.h5; return the yaml entry."""
    from tqdm import tqdm

    items = iter(tqdm(items, total=total, desc="synthesizing features", unit=" videos", disable=not progress))
    if feature_format == "h5":
        write_h5(items, out_dir / "features.h5")
        return "features.h5"
    while chunk := dict(islice(items, _CHUNK)):
        write_npy_dir(chunk, out_dir / "features")
    return "features"


def _check_format(feature_format: str) -> None:
    if feature_format not in FEATURE_FORMATS:
        raise ConfigError(
            f"feature_format must be one of {', '.join(FEATURE_FORMATS)}, got {feature_format!r}"
        )


def _write_yaml(path: Path, data: dict) -> None:
    with atomic_open(path) as handle:
        yaml.safe_dump(data, handle, sort_keys=False)


def generate(cfg: SynthConfig, out_dir: PathLike, feature_format: str = "npy", progress: bool = True) -> Path:
    """Write the synthetic benchmark (Charades-STA layout) to out_dir; return its data.yaml path."""
    _check_format(feature_format)
    check_both_splits(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scripts = make_scripts(cfg)
    for split, split_scripts in scripts.items():
        write_charades_sta(script_samples(split_scripts), out_dir / f"{split}.txt")
    all_scripts = scripts["train"] + scripts["test"]
    write_durations({s.video_id: s.duration for s in all_scripts}, out_dir / "durations.json")
    protos = make_prototypes(cfg)
    items = ((s.video_id, render_video(cfg, s, protos)) for s in all_scripts)
    features = _write_features(items, out_dir, feature_format, len(all_scripts), progress)
    synth = asdict(cfg)
    if (name := preset_name(cfg)) is not None:
        synth["preset"] = name
    data = {
        "format": "charades_sta",
        "splits": {"train": "train.txt", "test": "test.txt"},
        "durations": "durations.json",
        "features": features,
        "word_vectors": "glove-6b-50d",
        "max_video_len": 64,
        "synth": synth,
    }
    _write_yaml(out_dir / "data.yaml", data)
    return out_dir / "data.yaml"
