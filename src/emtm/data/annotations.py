"""Read and write temporal-grounding annotation files.

Every reader returns a list of `Sample` (times in seconds) and a `ReadReport`. The policy is the
same for all formats:

- a time below 0 is clipped to 0, a time past the video's duration is clipped to the duration,
  and the kept sample is counted in `report.n_clipped` (the windows whose END was past the duration
  in `report.n_ends_clipped`, and per sample in `Sample.ends_clipped`);
- a window whose start >= end after clipping, or with a non-finite time, is dropped; a sample left
  with no window is dropped: it is counted in `report.n_dropped`, described in `report.warnings`
  (file, line or video/index, and the values) and logged as a warning on the "emtm.data" logger
  (a JSONL query that keeps another of its windows is kept, and the dropped window is warned about);
- anything malformed raises `DataError` naming the file and line (or video id and field); a
  duration (or fps / frame count) that is not a positive finite number is malformed, not dropped.

`report.n_read` counts the queries read, `report.n_kept` those returned, so
`n_read == n_kept + n_dropped`; `n_clipped` counts kept samples only. Blank lines are skipped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from emtm.data.records import ReadReport, Sample
from emtm.errors import DataError
from emtm.io import atomic_open, write_json

FORMATS = ("charades_sta", "activitynet", "tacos", "jsonl")

PathLike = str | os.PathLike[str]

logger = logging.getLogger("emtm.data")


# --------------------------------------------------------------------------------------------
# Public API


def read_annotations(
    path: PathLike,
    fmt: str,
    durations: PathLike | Sequence[PathLike] | Mapping[str, float] | None = None,
) -> tuple[list[Sample], ReadReport]:
    """Read an annotation file of format `fmt` (one of `FORMATS`).

    `durations` (a file or a list of files for `load_durations`, or a loaded {video_id: seconds}
    dict) is required for "charades_sta", whose files do not hold video durations; other formats
    ignore it.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown annotation format {fmt!r}; expected one of {', '.join(FORMATS)}", path)
    path = Path(path)
    _require_file(path, "annotation file")
    report = ReadReport(path=str(path))
    if fmt == "charades_sta":
        samples = _read_charades_sta(path, durations, report)
    elif fmt == "activitynet":
        samples = _read_activitynet(path, report)
    elif fmt == "tacos":
        samples = _read_tacos(path, report)
    else:
        samples = _read_jsonl(path, report)
    report.n_kept = len(samples)
    logger.info(report.summary())
    return samples, report


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
    _require_file(path, "durations file")
    if path.suffix.lower() == ".csv":
        return _load_durations_csv(path)
    data = _load_json(path, expected="a JSON object {video_id: seconds} or a Charades .csv file")
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object {{video_id: seconds}}, got {_kind(data)}", path)
    out: dict[str, float] = {}
    for vid, value in data.items():
        if isinstance(value, dict):
            if "duration" not in value:
                raise DataError(f"video {vid!r}: missing key 'duration'", path)
            value = value["duration"]
        out[vid] = _duration(value, f"video {vid!r}: duration", path)
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


def write_charades_sta(samples: Iterable[Sample], path: PathLike) -> None:
    """Atomically write `VID START END##sentence` lines (times with 2 decimals).

    Sample ids and durations are not stored: write durations with `write_durations`.
    """
    path = Path(path)
    with atomic_open(path) as handle:
        for sample in samples:
            if not sample.video_id or any(ch.isspace() for ch in sample.video_id):
                raise DataError(
                    f"sample {sample.sample_id!r}: video id {sample.video_id!r} is empty "
                    "or contains whitespace; it cannot be written as Charades-STA",
                    path,
                )
            if "\n" in sample.sentence or "\r" in sample.sentence:
                raise DataError(
                    f"sample {sample.sample_id!r}: sentence contains a line break; "
                    "it cannot be written as Charades-STA",
                    path,
                )
            handle.write(f"{sample.video_id} {sample.start:.2f} {sample.end:.2f}##{sample.sentence}\n")


def write_durations(durations: dict[str, float], path: PathLike) -> None:
    """Atomically write durations as JSON `{video_id: seconds}`."""
    write_json(path, {str(vid): float(seconds) for vid, seconds in durations.items()})


def write_jsonl(samples: Iterable[Sample], path: PathLike) -> None:
    """Atomically write one Lighthouse/Moment-DETR JSON object per sample.

    Layout: `{"qid": sample_id, "query": sentence, "vid": video_id, "duration": seconds,
    "relevant_windows": [[start, end], ...]}` (every window of the sample); qid is written as the
    sample id string.
    """
    with atomic_open(path) as handle:
        for sample in samples:
            record = {
                "qid": sample.sample_id,
                "query": sample.sentence,
                "vid": sample.video_id,
                "duration": sample.duration,
                "relevant_windows": [list(w) for w in sample.windows],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def annotation_hash(path: PathLike) -> str:
    """sha256 hex digest of the file's bytes."""
    path = Path(path)
    _require_file(path, "annotation file")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Readers


def _read_charades_sta(
    path: Path, durations: PathLike | Sequence[PathLike] | Mapping[str, float] | None, report: ReadReport
) -> list[Sample]:
    """`VID START END##sentence` per line, seconds; durations come from elsewhere."""
    if durations is None:
        raise DataError(
            "Charades-STA files hold no video durations: pass the durations file "
            "(e.g. charades_durations.json or Charades_v1_*.csv) as `durations`",
            path,
        )
    if isinstance(durations, Mapping):
        source = "the given durations"
        table = {str(v): _duration(d, f"durations: video {v!r}", source) for v, d in durations.items()}
    else:
        many = not isinstance(durations, str | os.PathLike)
        source = ", ".join(map(str, durations)) if many else str(durations)
        table = load_durations(durations)

    samples: list[Sample] = []
    counters: dict[str, int] = {}
    for lineno, line in _text_lines(path):
        expected = "expected 'VID START END##sentence'"
        if "##" not in line:
            raise DataError(f"no '##' separator; {expected}, got {short_repr(line)}", path, lineno)
        head, sentence = line.split("##", 1)
        fields = head.split()
        if len(fields) != 3:
            raise DataError(
                f"{expected}, got {len(fields)} field(s) before '##': {short_repr(head)}", path, lineno
            )
        vid, start_text, end_text = fields
        try:
            start, end = float(start_text), float(end_text)
        except ValueError:
            raise DataError(
                f"start/end must be numbers (seconds), got {short_repr(start_text)} {short_repr(end_text)}",
                path,
                lineno,
            ) from None
        sentence = sentence.strip()
        if not sentence:
            raise DataError("empty sentence after '##'", path, lineno)
        if vid not in table:
            raise DataError(f"video {vid!r} is not in the durations ({source})", path, lineno)
        k = counters.get(vid, 0)
        counters[vid] = k + 1
        sample = _make_sample(
            report, f"{vid}_{k}", vid, table[vid], [(start, end)], sentence, where=f"{path}, line {lineno}"
        )
        if sample is not None:
            samples.append(sample)
    return samples


def _read_activitynet(path: Path, report: ReadReport) -> list[Sample]:
    """`{vid: {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}`, seconds."""
    data = _load_json(path, expected='a JSON object {video_id: {"duration", "timestamps", "sentences"}}')
    samples: list[Sample] = []
    for vid, record in _video_records(data, path, ("duration", "timestamps", "sentences")):
        duration = _duration(record["duration"], f"video {vid!r}: duration", path)
        for k, (start, end), sentence in _queries(vid, record, path):
            sample = _make_sample(
                report,
                f"{vid}_{k}",
                vid,
                duration,
                [(start, end)],
                sentence,
                where=f"{path}, video {vid!r}, timestamps[{k}]",
            )
            if sample is not None:
                samples.append(sample)
    return samples


def _read_tacos(path: Path, report: ReadReport) -> list[Sample]:
    """2D-TAN TACoS: `{"vid.avi": {"timestamps": [[f0, f1], ...], "sentences", "fps", "num_frames"}}`.

    Frame indices become seconds (frame / fps); duration = num_frames / fps; ".avi" is removed
    from the video id.
    """
    expected = 'a JSON object {"video.avi": {"timestamps", "sentences", "fps", "num_frames"}}'
    data = _load_json(path, expected=expected)
    samples: list[Sample] = []
    keys: dict[str, str] = {}
    for key, record in _video_records(data, path, ("timestamps", "sentences", "fps", "num_frames")):
        vid = key.removesuffix(".avi")
        if vid in keys:
            raise DataError(f"videos {keys[vid]!r} and {key!r} both have video id {vid!r}", path)
        keys[vid] = key
        fps = _duration(record["fps"], f"video {key!r}: fps", path)
        num_frames = _duration(record["num_frames"], f"video {key!r}: num_frames", path)
        duration = _duration(num_frames / fps, f"video {key!r}: duration num_frames / fps", path)
        for k, (start, end), sentence in _queries(key, record, path):
            sample = _make_sample(
                report,
                f"{vid}_{k}",
                vid,
                duration,
                [(start / fps, end / fps)],
                sentence,
                where=f"{path}, video {key!r}, timestamps[{k}] (frames {start:g}-{end:g} at {fps:g} fps)",
            )
            if sample is not None:
                samples.append(sample)
    return samples


def _read_jsonl(path: Path, report: ReadReport) -> list[Sample]:
    """Lighthouse / Moment-DETR / QVHighlights JSON lines.

    Each line is `{"qid", "query", "vid", "duration", "relevant_windows": [[s, e], ...]}` in
    seconds. Every window is kept (`Sample.windows`, for the evaluator); the first kept one is the
    sample's moment (start, end), the one training uses. sample_id = str(qid), which must be unique
    in the file.
    """
    samples: list[Sample] = []
    first_line: dict[str, int] = {}
    for lineno, record in json_lines(path):
        for key in ("qid", "query", "vid", "duration", "relevant_windows"):
            if key not in record:
                raise DataError(f"missing key {key!r}", path, lineno)
        qid = record["qid"]
        if isinstance(qid, bool) or not isinstance(qid, int | str):
            raise DataError(f"'qid' must be an integer or a string, got {_kind(qid)}", path, lineno)
        vid = record["vid"]
        if not isinstance(vid, str) or not vid:
            raise DataError(f"'vid' must be a non-empty string, got {short_repr(vid)}", path, lineno)
        query = record["query"]
        if not isinstance(query, str):
            raise DataError(f"'query' must be a string, got {_kind(query)}", path, lineno)
        if not query.strip():
            raise DataError("empty 'query'", path, lineno)
        duration = _duration(record["duration"], "'duration'", path, lineno)
        windows = record["relevant_windows"]
        if not isinstance(windows, list) or not windows:
            expected = "'relevant_windows' must be a non-empty list of [start, end]"
            raise DataError(f"{expected}, got {short_repr(windows)}", path, lineno)
        pairs = [_pair(w, f"'relevant_windows'[{i}]", path, lineno) for i, w in enumerate(windows)]
        sample_id = str(qid)
        if sample_id in first_line:
            raise DataError(
                f"duplicate qid {sample_id!r} on line {first_line[sample_id]} and line {lineno}",
                path,
                lineno,
            )
        first_line[sample_id] = lineno
        sample = _make_sample(
            report, sample_id, vid, duration, pairs, query.strip(), where=f"{path}, line {lineno}"
        )
        if sample is not None:
            samples.append(sample)
    return samples


# --------------------------------------------------------------------------------------------
# Helpers


def _make_sample(
    report: ReadReport,
    sample_id: str,
    video_id: str,
    duration: float,
    windows: Sequence[tuple[float, float]],
    sentence: str,
    where: str,
) -> Sample | None:
    """Apply the clip/drop policy to each window of one query and count the query in `report`."""
    report.n_read += 1
    kept: list[tuple[float, float]] = []
    problems: list[str] = []
    clipped = ends_clipped = 0
    for i, (start, end) in enumerate(windows):
        problem = _window_problem(start, end, duration)
        if problem:
            problems.append(problem if len(windows) == 1 else f"relevant_windows[{i}] {problem}")
            continue
        new = (float(min(max(start, 0.0), duration)), float(min(max(end, 0.0), duration)))
        clipped += new != (start, end)
        ends_clipped += end > duration
        kept.append(new)
    if not kept:
        report.n_dropped += 1
    for problem in problems:
        tail = "; the query has no window left" if len(windows) > 1 and not kept else ""
        message = f"{where}: dropped: {problem}{tail}"
        report.warnings.append(message)
        logger.warning(message)
    if not kept:
        return None
    report.n_clipped += bool(clipped)
    report.n_ends_clipped += ends_clipped
    start, end = kept[0]
    return Sample(sample_id, video_id, float(duration), start, end, sentence, tuple(kept), ends_clipped)


def _window_problem(start: float, end: float, duration: float) -> str:
    """Why a window cannot be kept ("" when it can)."""
    if not (math.isfinite(start) and math.isfinite(end)):
        return f"non-finite time (start {start}, end {end})"
    if start >= end:
        return f"start {start} >= end {end} (duration {duration})"
    if min(max(start, 0.0), duration) >= min(max(end, 0.0), duration):
        return f"[{start}, {end}] is empty after clipping to the duration [0, {duration}]"
    return ""


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} does not exist", path)
    if not path.is_file():
        raise DataError(f"{what} is not a regular file", path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte offset {exc.start})", path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path) from None


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line ending), skipping blank lines."""
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield lineno, line


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) per non-blank line of a JSON-lines file. Text that is not UTF-8,
    a line that is not valid JSON, repeats a key or is not an object is a DataError naming the line."""
    for lineno, line in _text_lines(path):
        try:
            record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKeyError as exc:
            raise DataError(f"duplicate key {exc.key!r} in the JSON object", path, lineno) from None
        except (ValueError, RecursionError) as exc:  # syntax, a huge integer, or deep nesting
            raise DataError(f"invalid JSON ({json_problem(exc)})", path, lineno) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object per line, got {_kind(record)}", path, lineno)
        yield lineno, record


class _DuplicateKeyError(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def _load_json(path: Path, expected: str) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKeyError as exc:
        raise DataError(f"duplicate key {exc.key!r} in a JSON object", path) from None
    except (ValueError, RecursionError) as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        raise DataError(f"invalid JSON ({json_problem(exc)}); expected {expected}", path, line) from None


def json_problem(exc: ValueError | RecursionError) -> str:
    """What `json.loads` rejected, for a message: syntax (with column), a too-long integer or deep nesting."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg}, column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "arrays/objects nested too deeply"
    return str(exc).split(":")[0]  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"


def short_repr(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters, so a huge field does not flood an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__} too long to print>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _load_durations_csv(path: Path) -> dict[str, float]:
    text = _read_text(path)
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
            out[vid] = _duration(seconds, f"video {vid!r}: 'length'", path, line)
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path, reader.line_num) from None
    return out


def _video_records(data: Any, path: Path, keys: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    """Yield (video key, record) of a `{vid: {...}}` JSON file, checking the record's keys."""
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object keyed by video id, got {_kind(data)}", path)
    for vid, record in data.items():
        if not isinstance(record, dict):
            raise DataError(
                f"video {vid!r}: expected an object with keys {list(keys)}, got {_kind(record)}", path
            )
        for key in keys:
            if key not in record:
                raise DataError(f"video {vid!r}: missing key {key!r}", path)
        yield vid, record


def _queries(vid: str, record: dict, path: Path) -> Iterator[tuple[int, tuple[float, float], str]]:
    """Yield (index, (start, end), stripped sentence) of a record's timestamps/sentences."""
    timestamps, sentences = record["timestamps"], record["sentences"]
    if not isinstance(timestamps, list):
        raise DataError(f"video {vid!r}: 'timestamps' must be a list, got {_kind(timestamps)}", path)
    if not isinstance(sentences, list):
        raise DataError(f"video {vid!r}: 'sentences' must be a list, got {_kind(sentences)}", path)
    if len(timestamps) != len(sentences):
        raise DataError(
            f"video {vid!r}: {len(timestamps)} timestamps but {len(sentences)} sentences (must be equal)",
            path,
        )
    for k, (pair, sentence) in enumerate(zip(timestamps, sentences)):
        times = _pair(pair, f"video {vid!r}: timestamps[{k}]", path)
        if not isinstance(sentence, str):
            raise DataError(f"video {vid!r}: sentences[{k}] must be a string, got {_kind(sentence)}", path)
        if not sentence.strip():
            raise DataError(f"video {vid!r}: sentences[{k}] is empty", path)
        yield k, times, sentence.strip()


def _pair(value: Any, what: str, path: Path, line: int | None = None) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_number(x) for x in value)):
        raise DataError(f"{what} must be [start, end] (two numbers), got {short_repr(value)}", path, line)
    return float(value[0]), float(value[1])


def _duration(value: Any, what: str, path: object, line: int | None = None) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise DataError(f"{what} must be a positive finite number, got {short_repr(value)}", path, line)
    return float(value)


def _is_number(value: Any) -> bool:
    """An int or float (not bool) that converts to a float: JSON allows integers past float range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
