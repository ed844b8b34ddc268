"""Video durations files: JSON `{video_id: seconds}` (or `{video_id: {"duration": seconds}}`) and the
official Charades CSV files, read (`load_durations`) and written (`write_durations`)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from emtm.data.parsing import kind_of, load_json, positive_number, read_text, require_file, short_repr
from emtm.errors import DataError
from emtm.io import write_json

PathLike = str | os.PathLike[str]


def load_durations(path: PathLike | Sequence[PathLike]) -> dict[str, float]:
    """Load video durations (seconds) as {video_id: seconds}, from one file or a list of files.

    Each file is JSON `{vid: seconds}`, JSON `{vid: {"duration": seconds, ...}}`, or the official
    Charades `Charades_v1_train.csv` / `Charades_v1_test.csv` as distributed (a file ending in .csv
    with columns `id` and `length`; the other columns are ignored). A list is merged; a video that
    two files give different durations is an error naming both files.
    """
    if not isinstance(path, str | os.PathLike):
        return _merge_durations([Path(p) for p in path])
    path = Path(path)
    require_file(path, "durations file")
    if path.suffix.lower() == ".csv":
        return _load_durations_csv(path)
    data = load_json(path, expected="a JSON object {video_id: seconds} or a Charades .csv file")
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object {{video_id: seconds}}, got {kind_of(data)}", path)
    out: dict[str, float] = {}
    for vid, value in data.items():
        if isinstance(value, dict):
            if "duration" not in value:
                raise DataError(f"video {vid!r}: missing key 'duration'", path)
            value = value["duration"]
        out[vid] = positive_number(value, f"video {vid!r}: duration", path)
    return out


def _merge_durations(paths: list[Path]) -> dict[str, float]:
    if not paths:
        raise DataError("no durations file given (an empty list)")
    out: dict[str, float] = {}
    source: dict[str, Path] = {}
    for path in paths:
        for vid, seconds in load_durations(path).items():
            if vid in out and out[vid] != seconds:
                raise DataError(
                    f"video {vid!r}: duration {seconds:g} s, but {source[vid]} gives {out[vid]:g} s; "
                    "the durations files must agree",
                    path,
                )
            out[vid], source[vid] = seconds, source.get(vid, path)
    return out


def _load_durations_csv(path: Path) -> dict[str, float]:
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted fields may hold commas and newlines
    try:
        header = reader.fieldnames or []
        if "id" not in header or "length" not in header:
            raise DataError(f"expected a Charades CSV with columns 'id' and 'length', got {header}", path, 1)
        out: dict[str, float] = {}
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            vid, length = (row.get("id") or "").strip(), (row.get("length") or "").strip()
            if not vid:
                raise DataError("empty 'id'", path, line)
            try:
                seconds = float(length)
            except ValueError:
                raise DataError(
                    f"video {short_repr(vid)}: 'length' must be a number, got {short_repr(length)}",
                    path,
                    line,
                ) from None
            if vid in first_line:
                raise DataError(f"duplicate id {vid!r} (also on line {first_line[vid]})", path, line)
            first_line[vid] = line
            out[vid] = positive_number(seconds, f"video {vid!r}: 'length'", path, line)
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path, reader.line_num) from None
    return out


def write_durations(durations: dict[str, float], path: PathLike) -> None:
    """Atomically write durations as JSON `{video_id: seconds}`."""
    write_json(path, {str(vid): float(seconds) for vid, seconds in durations.items()})
