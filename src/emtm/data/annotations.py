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

Durations files are read and written by `emtm.data.durations`, and text and JSON files are read with
the checks of `emtm.data.parsing`; `load_durations`, `write_durations`, `json_lines`, `json_problem`
and `short_repr` are importable from here too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from emtm.data.durations import load_durations, write_durations
from emtm.data.parsing import (
    json_lines,
    json_problem,
    kind_of,
    load_json,
    number_pair,
    positive_number,
    require_file,
    short_repr,
    text_lines,
)
from emtm.data.records import ReadReport, Sample
from emtm.errors import DataError
from emtm.io import atomic_open

__all__ = [
    "FORMATS", "PathLike", "annotation_hash", "json_lines", "json_problem", "load_durations",
    "read_annotations", "short_repr", "write_charades_sta", "write_durations", "write_jsonl",
]  # fmt: skip

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
    require_file(path, "annotation file")
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
    require_file(path, "annotation file")
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
        table = {str(v): positive_number(d, f"durations: video {v!r}", source) for v, d in durations.items()}
    else:
        many = not isinstance(durations, str | os.PathLike)
        source = ", ".join(map(str, durations)) if many else str(durations)
        table = load_durations(durations)

    samples: list[Sample] = []
    counters: dict[str, int] = {}
    for lineno, line in text_lines(path):
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
    data = load_json(path, expected='a JSON object {video_id: {"duration", "timestamps", "sentences"}}')
    samples: list[Sample] = []
    for vid, record in _video_records(data, path, ("duration", "timestamps", "sentences")):
        duration = positive_number(record["duration"], f"video {vid!r}: duration", path)
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
    data = load_json(path, expected=expected)
    samples: list[Sample] = []
    keys: dict[str, str] = {}
    for key, record in _video_records(data, path, ("timestamps", "sentences", "fps", "num_frames")):
        vid = key.removesuffix(".avi")
        if vid in keys:
            raise DataError(f"videos {keys[vid]!r} and {key!r} both have video id {vid!r}", path)
        keys[vid] = key
        fps = positive_number(record["fps"], f"video {key!r}: fps", path)
        num_frames = positive_number(record["num_frames"], f"video {key!r}: num_frames", path)
        duration = positive_number(num_frames / fps, f"video {key!r}: duration num_frames / fps", path)
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
            raise DataError(f"'qid' must be an integer or a string, got {kind_of(qid)}", path, lineno)
        vid = record["vid"]
        if not isinstance(vid, str) or not vid:
            raise DataError(f"'vid' must be a non-empty string, got {short_repr(vid)}", path, lineno)
        query = record["query"]
        if not isinstance(query, str):
            raise DataError(f"'query' must be a string, got {kind_of(query)}", path, lineno)
        if not query.strip():
            raise DataError("empty 'query'", path, lineno)
        duration = positive_number(record["duration"], "'duration'", path, lineno)
        windows = record["relevant_windows"]
        if not isinstance(windows, list) or not windows:
            expected = "'relevant_windows' must be a non-empty list of [start, end]"
            raise DataError(f"{expected}, got {short_repr(windows)}", path, lineno)
        pairs = [number_pair(w, f"'relevant_windows'[{i}]", path, lineno) for i, w in enumerate(windows)]
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


def _video_records(data: Any, path: Path, keys: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    """Yield (video key, record) of a `{vid: {...}}` JSON file, checking the record's keys."""
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object keyed by video id, got {kind_of(data)}", path)
    for vid, record in data.items():
        if not isinstance(record, dict):
            raise DataError(
                f"video {vid!r}: expected an object with keys {list(keys)}, got {kind_of(record)}", path
            )
        for key in keys:
            if key not in record:
                raise DataError(f"video {vid!r}: missing key {key!r}", path)
        yield vid, record


def _queries(vid: str, record: dict, path: Path) -> Iterator[tuple[int, tuple[float, float], str]]:
    """Yield (index, (start, end), stripped sentence) of a record's timestamps/sentences."""
    timestamps, sentences = record["timestamps"], record["sentences"]
    if not isinstance(timestamps, list):
        raise DataError(f"video {vid!r}: 'timestamps' must be a list, got {kind_of(timestamps)}", path)
    if not isinstance(sentences, list):
        raise DataError(f"video {vid!r}: 'sentences' must be a list, got {kind_of(sentences)}", path)
    if len(timestamps) != len(sentences):
        raise DataError(
            f"video {vid!r}: {len(timestamps)} timestamps but {len(sentences)} sentences (must be equal)",
            path,
        )
    for k, (pair, sentence) in enumerate(zip(timestamps, sentences)):
        times = number_pair(pair, f"video {vid!r}: timestamps[{k}]", path)
        if not isinstance(sentence, str):
            raise DataError(f"video {vid!r}: sentences[{k}] must be a string, got {kind_of(sentence)}", path)
        if not sentence.strip():
            raise DataError(f"video {vid!r}: sentences[{k}] is empty", path)
        yield k, times, sentence.strip()
