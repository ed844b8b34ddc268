"""Writing a teacher cache, shared by the export of a trained teacher (`emtm.engine.teachers`) and the
import of outputs computed elsewhere (`emtm.distill.cache.imports`): the split a cache is built for, the
unify options, and the atomic write (the file is written to a temporary path and renamed, so it is
complete or absent, never half-written)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emtm.config import DataConfig, load_data_config
from emtm.data.annotations import annotation_hash
from emtm.data.dataset import prepare
from emtm.data.features import FeatureStore
from emtm.data.records import Sample
from emtm.distill.cache.layout import CacheMeta, PathLike, sample_key
from emtm.distill.calibrate import DEFAULTS
from emtm.errors import ConfigError, DataError
from emtm.io import atomic_path


def write_cache(out: PathLike, meta: CacheMeta, entries: Iterable[tuple[str, np.ndarray]]) -> Path:
    """Write (sample_id, (2, n)) entries atomically; an exception leaves no file at `out`."""
    import h5py

    out = Path(out)
    seen: set[str] = set()
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["meta"] = json.dumps(asdict(meta))
        group = f.create_group("samples")
        for sample_id, dist in entries:
            if sample_id in seen:
                raise DataError(f"sample_id {sample_id!r} occurs twice", meta.source)
            seen.add(sample_id)
            dataset = group.create_dataset(sample_key(sample_id), data=np.asarray(dist, dtype=np.float32))
            dataset.attrs["n"] = int(dist.shape[1])
    return out


def batch_rows(start: Tensor, end: Tensor, dst_mask: Tensor) -> list[np.ndarray]:
    """Per sample of a batch, its (2, n) distributions over the n valid clips of dst_mask."""
    both = torch.stack([start, end], 1).float().cpu().numpy()
    return [both[i, :, :n] for i, n in enumerate(dst_mask.sum(1).tolist())]


def lengths_mask(lengths: list[int]) -> Tensor:
    return torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def unify_options(options: dict[str, Any]) -> dict[str, Any]:
    """The unify options with the defaults (T = 1, sigma = 0.05) for those not given, checked."""
    options = {k: DEFAULTS.get(k) if v is None else v for k, v in options.items()}
    check_options(**options)
    return options


def check_options(temperature: float, sigma_frac: float, map_reduce: str) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if not sigma_frac > 0:
        raise ConfigError(f"sigma_frac must be > 0, got {sigma_frac}")
    if map_reduce not in ("sum", "max"):
        raise ConfigError(f"map_reduce must be 'sum' or 'max', got {map_reduce!r}")


@dataclass
class Split:
    """One split of a data.yaml: its samples, feature store and annotation file."""

    data_yaml: Path
    cfg: DataConfig
    name: str
    samples: list[Sample]
    store: FeatureStore
    annotation_file: Path

    def grid_lengths(self, samples: list[Sample]) -> dict[str, int]:
        """{video_id: n} of the student grid, n = min(T, max_video_len); reads each video once."""
        videos = dict.fromkeys(s.video_id for s in samples)
        return {v: min(int(self.store.load(v).shape[0]), self.cfg.max_video_len) for v in videos}

    def meta(self, teacher: str, form: str, source: PathLike, options: dict[str, Any]) -> CacheMeta:
        return CacheMeta(
            teacher=teacher,
            output_form=form,
            source=str(source),  # resolved path(s), space-separated
            dataset=str(self.data_yaml.resolve()),
            split=self.name,
            annotation_file=str(self.annotation_file),
            annotation_sha256=annotation_hash(self.annotation_file),
            rule=form,
            max_video_len=self.cfg.max_video_len,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            **options,
        )


def read_split(data_yaml: PathLike, split: str) -> Split:
    """A split named in data.yaml (all of its file: no validation hold-out is removed)."""
    cfg = load_data_config(data_yaml)
    annotation_file = cfg.split_path(split)
    prepared = prepare(cfg, seed=0, names=(split,))
    return Split(Path(data_yaml), cfg, split, prepared.splits[split].samples, prepared.store, annotation_file)
