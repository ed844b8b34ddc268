"""Reading a teacher cache: `TeacherCache`, a lazy per-sample reader, and `check_compatible`, which says
whether a cache was built for a split's annotations and student grid."""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from emtm.config import load_data_config
from emtm.data.annotations import annotation_hash
from emtm.distill.cache.layout import CACHE_VERSION, CacheMeta, PathLike, sample_key
from emtm.errors import DataError


class TeacherCache:
    """Lazy reader of a cache file: `sample_id in cache`, `cache.get(sample_id)` -> float32 (2, n).

    The HDF5 file is opened on first use in each process (reopened after a fork, dropped when pickled),
    so a cache can be shared with DataLoader workers.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError("teacher cache does not exist; build it with `emtm teachers export`", self.path)
        self._handle: Any = None
        self._pid: int | None = None
        self.meta = self._read_meta()
        self.close()  # no handle survives __init__, so nothing is shared across a fork

    def _file(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            import h5py

            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"cannot open the teacher cache as HDF5 ({exc})", self.path) from None
            self._pid = os.getpid()
        return self._handle

    def _read_meta(self) -> CacheMeta:
        f = self._file()
        if "meta" not in f.attrs or "samples" not in f:
            raise DataError("not an emtm teacher cache (no 'meta' attribute or 'samples' group)", self.path)
        try:
            raw = json.loads(f.attrs["meta"])
        except (TypeError, json.JSONDecodeError) as exc:
            raise DataError(f"teacher cache metadata is not valid JSON ({exc})", self.path) from None
        required = [f.name for f in fields(CacheMeta) if f.default is MISSING]
        missing = [name for name in required if name not in raw]
        if missing and raw.get("version") == CACHE_VERSION:
            raise DataError(f"teacher cache metadata lacks {missing}; rebuild the cache", self.path)
        present = [f.name for f in fields(CacheMeta) if f.default is MISSING or f.name in raw]
        return CacheMeta(**{name: raw.get(name) for name in present})  # other versions: check_compatible

    def __contains__(self, sample_id: object) -> bool:
        if not isinstance(sample_id, str) or not sample_id:
            return False
        return sample_key(sample_id) in self._file()["samples"]

    def __len__(self) -> int:
        return len(self._file()["samples"])

    def sample_ids(self) -> list[str]:
        return [unquote(key) for key in self._file()["samples"]]

    def get(self, sample_id: str) -> np.ndarray:
        """The (2, n) float32 start/end distributions of one sample."""
        group = self._file()["samples"]
        key = sample_key(sample_id)
        if key not in group:
            raise DataError(
                f"no teacher outputs for sample {sample_id!r} (teacher {self.meta.teacher!r}, split "
                f"{self.meta.split!r}); rebuild the cache for this data",
                self.path,
            )
        return np.asarray(group[key][()], dtype=np.float32)

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
        self._pid = None

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def __repr__(self) -> str:
        return f"TeacherCache({str(self.path)!r}, teacher={self.meta.teacher!r}, split={self.meta.split!r})"


def check_compatible(
    cache: TeacherCache, data_yaml: PathLike, split: str, max_video_len: int | None = None
) -> None:
    """Raise DataError unless `cache` was built for this split's annotations and student grid.

    Compared: the cache format version, the split name, the annotation file's sha256 (its content, not
    its path) and max_video_len (default: the data.yaml's).
    """
    meta = cache.meta
    hint = _rebuild_hint(meta, data_yaml, split, cache.path)
    if meta.version != CACHE_VERSION:
        raise DataError(
            f"teacher cache format version {meta.version!r}, but this emtm reads version {CACHE_VERSION}; "
            f"{hint}",
            cache.path,
        )
    data_cfg = load_data_config(data_yaml)
    annotation_file = data_cfg.split_path(split)
    sha = annotation_hash(annotation_file)
    wanted_len = data_cfg.max_video_len if max_video_len is None else max_video_len
    problems = []
    if meta.split != split:
        problems.append(f"split {meta.split!r}, not {split!r}")
    if meta.annotation_sha256 != sha:
        changed = "which has changed since" if meta.annotation_file == str(annotation_file) else "not"
        problems.append(
            f"annotation file {meta.annotation_file} (sha256 {meta.annotation_sha256[:12]}), "
            f"{changed} {annotation_file} (sha256 {sha[:12]})"
        )
    if meta.max_video_len != wanted_len:
        problems.append(f"max_video_len {meta.max_video_len}, not {wanted_len}")
    if problems:
        raise DataError(
            f"teacher cache of {meta.teacher!r} was built for {'; '.join(problems)} "
            f"(asked: {data_yaml}, split {split!r}); {hint}",
            cache.path,
        )


def _rebuild_hint(meta: CacheMeta, data_yaml: PathLike, split: str, path: Path) -> str:
    if meta.source and Path(str(meta.source)).suffix in (".npz", ".jsonl"):
        return (
            f"rebuild it with `emtm teachers import --format {meta.output_form} --in {meta.source} "
            f"--data {data_yaml} --split {split} --out {path}`"
        )
    return (
        f"rebuild it with `emtm teachers export --run {meta.source} --data {data_yaml} --split {split} "
        f"--out {path}`"
    )


def teachers_holdout_seed(paths: list[PathLike]) -> int | None:
    """The validation hold-out seed the teachers' runs share (`CacheMeta.holdout_seed`), or None when
    they differ or one does not record it (imported outputs, older caches): then no hold-out is free of
    every teacher. Out-of-fold caches, whose every entry is held out of its teacher, add no constraint."""
    metas = [TeacherCache(p).meta for p in paths]
    seeds = {m.holdout_seed for m in metas if not m.folds}
    return seeds.pop() if len(seeds) == 1 else None
