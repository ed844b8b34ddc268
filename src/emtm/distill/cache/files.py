"""Reading the files of native teacher outputs that `emtm teachers import` takes (.npz for "span" and
"2dmap", .jsonl for "proposals" and "regression"; layouts in `emtm.distill.cache`) into checked
per-sample records. No format is ever unpickled (np.load(allow_pickle=False)); every problem is a
DataError naming the file, the row or line and the sample_id."""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emtm.data.annotations import json_lines, short_repr
from emtm.data.features import NPY_READ_ERRORS
from emtm.data.records import Sample
from emtm.errors import DataError

UNITS = ("seconds", "fraction")

Records = dict[str, dict[str, np.ndarray]]  # sample_id -> its native outputs, in file order


def read_records(fmt: str, path: Path, by_id: dict[str, Sample], where: str) -> Records:
    """The records of a file of format `fmt`, each sample_id one of `by_id` (the split `where`) and
    unique."""
    return _READERS.get(fmt, _read_regression)(path, by_id, where)


# .npz formats


# What reading a damaged .npz raises (seen when fuzzing truncated and bit-flipped archives).
_NPZ_ERRORS = (*NPY_READ_ERRORS, zipfile.BadZipFile, zlib.error, NotImplementedError, KeyError, RuntimeError)


def _load_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """All arrays of an .npz, never unpickling; the required keys must be there."""
    try:
        npz = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:
        raise DataError(
            f"not a readable .npz archive ({exc}); it may be truncated or corrupt", path
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError("expected an .npz archive of named arrays (np.savez), not a single .npy array", path)
    with npz:
        missing = [key for key in required if key not in npz.files]
        if missing:
            raise DataError(f"missing array(s) {missing}; the archive has {npz.files}", path)
        arrays = {}
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                if "pickle" not in str(exc).lower():
                    raise DataError(f"array {key!r} cannot be read ({exc})", path) from None
                raise DataError(
                    f"array {key!r} is an object array, which would need pickle to load, and emtm never "
                    "unpickles; save it as a plain array (e.g. np.asarray(sample_ids, dtype=str))",
                    path,
                ) from None
            except _NPZ_ERRORS as exc:
                raise DataError(
                    f"array {key!r} cannot be read ({exc}); the archive may be truncated or corrupt", path
                ) from None
    return arrays


def _npz_ids(arrays: dict[str, np.ndarray], path: Path, by_id: dict[str, Sample], where: str) -> list[str]:
    """The "sample_ids" array as str, each one known to the split and unique."""
    raw = arrays["sample_ids"]
    if raw.ndim != 1 or raw.dtype.kind not in "USiu":
        raise DataError(f"'sample_ids' must be a 1-D str or int array, got {raw.dtype} {raw.shape}", path)
    try:
        ids = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw.tolist()]
    except UnicodeDecodeError as exc:
        raise DataError(f"'sample_ids' holds bytes that are not UTF-8 ({exc.reason})", path) from None
    first_row: dict[str, int] = {}
    for row, sid in enumerate(ids):
        if sid not in by_id:
            raise DataError(f"row {row}: sample_id {short_repr(sid)} is not in {where}", path)
        if sid in first_row:
            raise DataError(f"row {row}: sample_id {sid!r} already on row {first_row[sid]}", path)
        first_row[sid] = row
    return ids


def _check_rows(name: str, array: np.ndarray, n_rows: int, ndim: int, path: Path) -> np.ndarray:
    if array.ndim != ndim or array.shape[0] != n_rows or array.dtype.kind not in "fiub":
        raise DataError(
            f"{name!r} must be a numeric {ndim}-D array with one row per sample_id ({n_rows}), "
            f"got {array.dtype} {array.shape}",
            path,
        )
    return array


def _bad_values(values: np.ndarray) -> bool:
    return bool(np.isnan(values).any() or np.isposinf(values).any())


def _read_span(path: Path, by_id: dict[str, Sample], where: str) -> Records:
    arrays = _load_npz(path, ("sample_ids", "start_logits", "end_logits"))
    ids = _npz_ids(arrays, path, by_id, where)
    start = _check_rows("start_logits", arrays["start_logits"], len(ids), 2, path).astype(np.float32)
    end = _check_rows("end_logits", arrays["end_logits"], len(ids), 2, path).astype(np.float32)
    if start.shape != end.shape:
        raise DataError(f"'start_logits' {start.shape} and 'end_logits' {end.shape} differ in shape", path)
    width = start.shape[1]
    lengths = arrays.get("lengths", np.full(len(ids), width))
    lengths = _check_rows("lengths", lengths, len(ids), 1, path)
    records = {}
    for row, (sid, n) in enumerate(zip(ids, lengths.tolist())):
        if not (math.isfinite(n) and n == int(n) and 1 <= n <= width):
            raise DataError(f"row {row} ({sid!r}): length {n} is not in [1, {width}]", path)
        s, e = start[row, : int(n)], end[row, : int(n)]
        if _bad_values(s) or _bad_values(e):
            raise DataError(f"row {row} ({sid!r}): logits hold NaN or +inf", path)
        records[sid] = {"start": s, "end": e}
    return records


def _read_map(path: Path, by_id: dict[str, Sample], where: str) -> Records:
    arrays = _load_npz(path, ("sample_ids", "scores"))
    ids = _npz_ids(arrays, path, by_id, where)
    scores = _check_rows("scores", arrays["scores"], len(ids), 3, path).astype(np.float32)
    n = scores.shape[1]
    if scores.shape[2] != n:
        raise DataError(f"'scores' must be (S, N, N) square maps, got {scores.shape}", path)
    mask = arrays.get("mask", np.triu(np.ones((n, n), dtype=bool)))
    if mask.shape == (n, n):
        mask = np.broadcast_to(mask, scores.shape)
    if mask.shape != scores.shape or mask.dtype.kind not in "biu":
        raise DataError(
            f"'mask' must be bool (N, N) or (S, N, N) like 'scores', got {mask.dtype} {mask.shape}", path
        )
    is_logits = np.asarray(arrays.get("is_logits", False))
    if is_logits.dtype.kind not in "biu" or is_logits.shape not in ((), (len(ids),)):
        raise DataError(
            f"'is_logits' must be a bool scalar or (S,) array, got {is_logits.dtype} {is_logits.shape}", path
        )
    is_logits = np.broadcast_to(is_logits.astype(bool), (len(ids),))
    records = {}
    for row, sid in enumerate(ids):
        valid = scores[row][mask[row].astype(bool)]
        if valid.size == 0:
            raise DataError(f"row {row} ({sid!r}): the mask has no valid cell", path)
        if _bad_values(valid):
            raise DataError(f"row {row} ({sid!r}): scores hold NaN or +inf", path)
        if not is_logits[row] and (valid.min() < 0 or valid.max() > 1):
            raise DataError(
                f"row {row} ({sid!r}): scores outside [0, 1]; add is_logits=True if these are logits", path
            )
        records[sid] = {"scores": scores[row], "mask": mask[row].astype(bool), "is_logits": is_logits[row]}
    return records


# .jsonl formats


def _read_jsonl(
    path: Path, by_id: dict[str, Sample], where: str, keys: tuple[str, ...]
) -> Iterator[tuple[int, Sample, dict[str, Any]]]:
    """(line number, sample, record) per non-blank line; each sample_id known and unique."""
    first_line: dict[str, int] = {}
    for lineno, record in json_lines(path):
        for key in ("sample_id", "unit", *keys):
            if key not in record:
                raise DataError(f"missing key {key!r}", path, lineno)
        raw_id = record["sample_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, int | str):
            raise DataError(
                f"'sample_id' must be a string or an integer, got {short_repr(raw_id)}", path, lineno
            )
        sid = str(raw_id)
        if sid not in by_id:
            raise DataError(f"sample_id {short_repr(sid)} is not in {where}", path, lineno)
        if sid in first_line:
            raise DataError(f"sample_id {sid!r} already on line {first_line[sid]}", path, lineno)
        first_line[sid] = lineno
        if record["unit"] not in UNITS:
            raise DataError(f"'unit' must be one of {UNITS}, got {short_repr(record['unit'])}", path, lineno)
        yield lineno, by_id[sid], record


def _fraction_window(value: Any, unit: str, sample: Sample, what: str, path: Path, lineno: int) -> np.ndarray:
    """[s, e] (seconds or fractions) -> float32 fractions clipped to [0, 1]; s <= e required."""
    if not (isinstance(value, list) and len(value) == 2 and all(_is_finite(x) for x in value)):
        raise DataError(
            f"{what} must be [start, end] (two finite numbers), got {short_repr(value)}", path, lineno
        )
    s, e = (float(x) / (sample.duration if unit == "seconds" else 1.0) for x in value)
    if s > e:
        raise DataError(f"{what} {short_repr(value)} starts after it ends", path, lineno)
    return np.clip(np.array([s, e], dtype=np.float32), 0.0, 1.0)


def _is_finite(x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # a JSON integer past float range
        return False


def _read_proposals(path: Path, by_id: dict[str, Sample], where: str) -> Records:
    records = {}
    for lineno, sample, record in _read_jsonl(path, by_id, where, ("windows",)):
        windows = record["windows"]
        if not isinstance(windows, list) or not windows:
            raise DataError(
                f"'windows' must be a non-empty list of [start, end], got {short_repr(windows)}", path, lineno
            )
        if "scores" in record:
            scores, pairs = record["scores"], windows
            if not isinstance(scores, list) or len(scores) != len(windows):
                raise DataError(
                    f"'scores' must be a list of {len(windows)} numbers, one per window", path, lineno
                )
        elif all(isinstance(w, list) and len(w) == 3 for w in windows):  # Moment-DETR [s, e, score]
            scores, pairs = [w[2] for w in windows], [w[:2] for w in windows]
        else:
            raise DataError("missing 'scores' (or give windows as [start, end, score])", path, lineno)
        if not all(_is_finite(x) and x >= 0 for x in scores):
            raise DataError(f"'scores' must be finite numbers >= 0, got {short_repr(scores)}", path, lineno)
        records[sample.sample_id] = {
            "windows": np.stack(
                [
                    _fraction_window(w, record["unit"], sample, f"windows[{k}]", path, lineno)
                    for k, w in enumerate(pairs)
                ]
            ),
            "scores": np.asarray(scores, dtype=np.float32),
        }
    return records


def _read_regression(path: Path, by_id: dict[str, Sample], where: str) -> Records:
    return {
        sample.sample_id: {
            "window": _fraction_window(record["window"], record["unit"], sample, "'window'", path, lineno)
        }
        for lineno, sample, record in _read_jsonl(path, by_id, where, ("window",))
    }


_READERS = {"span": _read_span, "2dmap": _read_map, "proposals": _read_proposals}
