"""Per-video visual features, (T, D) float32: a folder of {video_id}.npy files or one HDF5 file.

Every store finds a video by one rule (`emtm.data.records.without_video_suffix`): under its id, or
else under the one key that equals the id once a video-file extension (".avi", ".mp4", ...) is
removed from both. So the TACoS video "s13-d21" (annotation key "s13-d21.avi") is found in a 2D-TAN
`tall_c3d_features.hdf5` keyed "s13-d21.avi", and in a folder of "s13-d21.npy" (`emtm extract`,
VSLNet). An exact key always wins; an id that matches two keys is an error naming them.
"""

from __future__ import annotations

import os
import tokenize
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from emtm.data.records import without_video_suffix
from emtm.errors import DataError
from emtm.io import atomic_open, atomic_path

# The largest |value| a feature may have, in a store or given to a model: far above any real CNN feature,
# far below what overflows a float32 LayerNorm or attention score (1e38 gave NaN scores).
FEATURE_LIMIT = 1e4

H5_SUFFIXES = (".h5", ".hdf5")
_LAYOUTS = (
    "features must be either a folder of {video_id}.npy files or an .h5/.hdf5 file with one "
    "top-level dataset per video id; each array is (T, D): T clips by D feature values"
)


@runtime_checkable
class FeatureStore(Protocol):
    """Where the features of each video come from."""

    path: Path

    @property
    def dim(self) -> int: ...

    def __contains__(self, video_id: str) -> bool: ...

    def load(self, video_id: str) -> np.ndarray: ...  # (T, D) float32

    def video_ids(self) -> list[str]: ...


def open_feature_store(path: str | os.PathLike) -> FeatureStore:
    """Open a folder of .npy files (NpyDirStore) or an .h5/.hdf5 file (H5Store)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return NpyDirStore(path)
    if path.is_file() and path.suffix.lower() in H5_SUFFIXES:
        return H5Store(path)
    if not path.exists():
        raise DataError(f"feature path does not exist; {_LAYOUTS}", path=path)
    raise DataError(f"not a feature store; {_LAYOUTS}", path=path)


# What np.load raises on a damaged .npy besides FileNotFoundError (seen when fuzzing truncated and
# bit-flipped files): numpy parses the header with ast and tokenize.
NPY_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    tokenize.TokenError,
    RecursionError,
    MemoryError,
)
# What h5py raises on a damaged file (seen when fuzzing truncated and bit-flipped files).
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, MemoryError)


def _corrupt_h5(path: Path, exc: Exception, what: str) -> DataError:
    return DataError(f"cannot read {what} ({exc}); the HDF5 file may be truncated or corrupt", path=path)


def _missing(video_id: str, store: FeatureStore) -> DataError:
    return DataError(
        f"no features for video {video_id!r} in this store (its keys look like {key_examples(store)}); "
        "check the video ids, or set `skip_missing_videos: true` in data.yaml to skip queries whose "
        "video has no features",
        path=store.path,
    )


def key_examples(store: FeatureStore, n: int = 3) -> list[str]:
    """A few of the store's keys, for an error message that shows a naming mismatch at once."""
    try:
        return store.video_ids()[:n]
    except DataError:
        return []


def _check(feats: Any, video_id: str, path: Path, dim: int | None) -> np.ndarray:
    """Validate one video's features and return them as a (T, D) float32 array.

    NaN/Inf policy: a video with any NaN or Inf value (or a value beyond float32 range) is refused with
    a DataError naming the video and the file; nothing is repaired silently.
    """
    where = f"video {video_id!r}"
    feats = np.asarray(feats)
    if feats.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: features must be real numbers (a float or int array), found dtype {feats.dtype}",
            path=path,
        )
    with np.errstate(over="ignore"):  # float64 values past float32 range become Inf: refused below
        feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2:
        raise DataError(f"{where}: expected (T, D) features, found shape {feats.shape}", path=path)
    if feats.shape[0] == 0 or feats.shape[1] == 0:
        raise DataError(
            f"{where}: empty features (shape {feats.shape}); expected (T, D) with T > 0 clips and D > 0",
            path=path,
        )
    if dim is not None and feats.shape[1] != dim:
        raise DataError(
            f"{where}: expected shape (T, {dim}) like the other videos of this store, found {feats.shape}",
            path=path,
        )
    bad = feats.size - int(np.count_nonzero(np.isfinite(feats)))
    if bad:
        raise DataError(
            f"{where}: {bad} of {feats.size} feature values are NaN or Inf (or beyond float32 range); "
            "features must be finite: re-extract this video or fix the values",
            path=path,
        )
    huge = int(np.count_nonzero(np.abs(feats) > FEATURE_LIMIT))
    if huge:
        raise DataError(
            f"{where}: {huge} of {feats.size} feature values are beyond +/-{FEATURE_LIMIT:g} (largest "
            f"{float(np.abs(feats).max()):.3g}); real clip features are O(1) to O(100) and such values "
            "overflow the models' arithmetic: check how they were computed or scale them",
            path=path,
        )
    return feats


class _Store:
    """What both stores share: the key rule (module docstring), D read from the first video, and every
    load checked against it."""

    path: Path
    _dim: int | None = None
    _stems: dict[str, list[str]] | None = None

    def video_ids(self) -> list[str]:  # pragma: no cover - implemented by each store
        raise NotImplementedError

    def _has(self, key: str) -> bool:  # pragma: no cover - is `key` exactly one of the store's keys?
        raise NotImplementedError

    def _read(self, video_id: str, dim: int | None = None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def key_of(self, video_id: str) -> str | None:
        """The store key holding `video_id`'s features under the module's rule, or None."""
        if self._has(video_id):
            return video_id
        if self._stems is None:
            stems: dict[str, list[str]] = {}
            for key in self.video_ids():
                stems.setdefault(without_video_suffix(key), []).append(key)
            self._stems = stems
        matches = self._stems.get(without_video_suffix(video_id), [])
        if len(matches) > 1:
            raise DataError(
                f"video {video_id!r} matches {len(matches)} keys of this store ({matches[:3]}) once their "
                "video-file extension is removed; keep one of them",
                path=self.path,
            )
        return matches[0] if matches else None

    def __contains__(self, video_id: str) -> bool:
        return self.key_of(video_id) is not None

    @property
    def dim(self) -> int:
        if self._dim is None:
            first = self.video_ids()[0]
            self._dim = int(self._read(first).shape[1])
        return self._dim

    def load(self, video_id: str) -> np.ndarray:
        return self._read(video_id, self.dim)


class NpyDirStore(_Store):
    """A folder of {video_id}.npy files, each (T, D). Files are read lazily, one per `load`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"not a folder; {_LAYOUTS}", path=self.path)
        self._ids: list[str] | None = None
        self._dim: int | None = None

    def video_ids(self) -> list[str]:
        if self._ids is None:
            try:
                names = [p.name for p in os.scandir(self.path)]
            except OSError as exc:
                problem = exc.strerror or exc
                raise DataError(f"cannot list the feature folder ({problem})", path=self.path) from None
            self._ids = sorted(name[: -len(".npy")] for name in names if name.endswith(".npy"))
            if not self._ids:
                raise DataError(f"no .npy files in this folder; {_LAYOUTS}", path=self.path)
        return self._ids

    def _has(self, key: str) -> bool:
        return not _bad_id(key) and (self.path / f"{key}.npy").is_file()

    def _read(self, video_id: str, dim: int | None = None) -> np.ndarray:
        if _bad_id(video_id):  # e.g. "../x" from an annotation file must not read outside the folder
            raise DataError(
                f"video id {video_id!r} cannot name a file in this folder (it is empty, '.' or '..', "
                "or contains '/' or a NUL byte); fix the video ids of the annotation file",
                path=self.path,
            )
        key = self.key_of(video_id)
        if key is None:
            raise _missing(video_id, self)
        file = self.path / f"{key}.npy"
        try:
            feats = np.load(file, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise _missing(video_id, self) from None
        except NPY_READ_ERRORS as exc:
            problem = str(exc) or type(exc).__name__
            if "Python objects" in problem or "pickle" in problem:
                problem = "an object array, which would need pickle to load, and emtm never unpickles"
            else:
                problem += "; it may be truncated or corrupt"
            raise DataError(
                f"cannot read features of video {video_id!r} ({problem}); expected a .npy file of a "
                "(T, D) numeric array",
                path=file,
            ) from None
        return _check(feats, video_id, file, dim)

    def __repr__(self) -> str:
        return f"NpyDirStore({str(self.path)!r})"


class H5Store(_Store):
    """An HDF5 file with one top-level (T, D) dataset per video id.

    The file is opened on first use in each process (the handle is reopened after a fork and
    dropped when pickled), so the store works in DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"feature file does not exist; {_LAYOUTS}", path=self.path)
        self._handle: Any = None
        self._pid: int | None = None
        self._ids: list[str] | None = None
        self._dim: int | None = None

    def _file(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            import h5py

            try:
                self._handle = h5py.File(self.path, "r")
            except _H5_ERRORS as exc:
                raise DataError(f"cannot open as HDF5 ({exc}); {_LAYOUTS}", path=self.path) from None
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def video_ids(self) -> list[str]:
        if self._ids is None:
            import h5py

            f = self._file()
            try:
                self._ids = sorted(k for k in f if f.get(k, getclass=True) is h5py.Dataset)
            except _H5_ERRORS as exc:
                raise _corrupt_h5(self.path, exc, "the list of videos") from None
            if not self._ids:
                raise DataError(f"no top-level datasets in this file; {_LAYOUTS}", path=self.path)
        return self._ids

    def _has(self, key: str) -> bool:
        import h5py

        f = self._file()
        try:
            return f.get(key, getclass=True) is h5py.Dataset
        except _H5_ERRORS as exc:
            raise _corrupt_h5(self.path, exc, f"the entry of video {key!r}") from None

    def _read(self, video_id: str, dim: int | None = None) -> np.ndarray:
        key = self.key_of(video_id)
        if key is None:
            raise _missing(video_id, self)
        try:
            feats = self._file()[key][()]
        except _H5_ERRORS as exc:
            raise _corrupt_h5(self.path, exc, f"the features of video {video_id!r}") from None
        return _check(feats, video_id, self.path, dim)

    def __repr__(self) -> str:
        return f"H5Store({str(self.path)!r})"


def resample_features(feats: np.ndarray, max_len: int) -> np.ndarray:
    """Average-pool T > max_len rows into exactly `max_len` bins (VSLNet's visual_feature_sampling).

    Bin k averages rows [round(k*T/max_len), round((k+1)*T/max_len)); since T > max_len no bin is
    empty. With T <= max_len the features are returned unchanged. Returns float32.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    feats = np.asarray(feats, dtype=np.float32)
    n = feats.shape[0]
    if n <= max_len:
        return feats
    edges = np.round(np.arange(max_len + 1) * (n / max_len)).astype(np.int64)
    sums = np.add.reduceat(feats.astype(np.float64), edges[:-1], axis=0)
    return (sums / np.diff(edges)[:, None]).astype(np.float32)


def _bad_id(video_id: str) -> bool:
    """True for ids that cannot be a file or dataset name (and could escape a folder)."""
    return not video_id or "/" in video_id or "\0" in video_id or video_id in (".", "..")


def _check_id(video_id: str) -> None:
    if _bad_id(video_id):
        raise ValueError(f"video id {video_id!r} cannot be used as a file or dataset name")


def write_npy_dir(features: Mapping[str, np.ndarray], directory: str | os.PathLike) -> None:
    """Write each video's features to `directory`/{video_id}.npy (float32, one atomic write each)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for video_id, feats in features.items():
        _check_id(video_id)
        with atomic_open(directory / f"{video_id}.npy", "wb") as handle:
            np.save(handle, np.asarray(feats, dtype=np.float32), allow_pickle=False)


def write_h5(
    features: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], path: str | os.PathLike
) -> None:
    """Write one HDF5 file (atomically) with a top-level float32 dataset per video id."""
    import h5py

    items = features.items() if isinstance(features, Mapping) else features
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for video_id, feats in items:
            _check_id(video_id)
            f.create_dataset(video_id, data=np.asarray(feats, dtype=np.float32))
