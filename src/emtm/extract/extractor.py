"""Videos in, a features folder out: `{vid}.npy` (T, D) float32 per video and a `features.json` index.

The folder is an npy feature store (`emtm.data.features.NpyDirStore`): put it as `features:` in a
data.yaml. Row t of `{vid}.npy` is the mean of the frame features sampled in [t * c, (t + 1) * c)
seconds, c = clip seconds. `features.json` is rewritten (atomically) after every video, so an
interrupted run resumes where it stopped; a video is skipped when its entry, its .npy of the recorded
shape and the same source file size are there.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emtm.errors import EmtmError
from emtm.extract.backbones import Backbone
from emtm.extract.video import VideoInfo, find_videos, sample_frames
from emtm.io import atomic_open, write_json

FEATURES_JSON = "features.json"
FORMAT = "emtm-features"
FORMAT_VERSION = 1
SETTINGS = ("backbone", "dim", "fps", "clip_seconds", "pooling", "preprocessing")


@dataclass
class VideoResult:
    """One video's outcome: status done / skipped / failed, and its record or error."""

    video_id: str
    path: Path
    status: str
    record: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0


def pool_clips(frames: np.ndarray, fps: float, clip_seconds: float) -> np.ndarray:
    """Average frame features (n, D) sampled at `fps` into clips of `clip_seconds` c: (ceil(n / fps / c), D).

    Frame k (covering [k / fps, (k + 1) / fps)) goes to clip floor(k / fps / c); with c >= 1 / fps every
    clip gets at least one frame.
    """
    n = frames.shape[0]
    clip_of = np.floor(np.arange(n) / fps / clip_seconds + 1e-6).astype(np.int64)
    n_clips = int(clip_of[-1]) + 1
    sums = np.zeros((n_clips, frames.shape[1]), dtype=np.float64)
    np.add.at(sums, clip_of, frames)
    counts = np.bincount(clip_of, minlength=n_clips)
    return (sums / counts[:, None]).astype(np.float32)


def settings_of(backbone: Backbone, fps: float, clip_seconds: float) -> dict[str, Any]:
    """What must match for features to be comparable: recorded once in features.json."""
    return {
        "backbone": backbone.name,
        "dim": int(backbone.dim),
        "fps": float(fps),
        "clip_seconds": float(clip_seconds),
        "pooling": "mean of the frames sampled in each clip",
        "preprocessing": json.loads(json.dumps(backbone.preprocessing)),  # plain JSON types
    }


def read_index(out: Path) -> dict[str, Any] | None:
    """features.json of `out`, or None when there is none yet."""
    path = out / FEATURES_JSON
    if not path.exists():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EmtmError(f"{path}: not readable JSON ({err}); delete it to extract everything again") from None
    if (
        not isinstance(index, dict)
        or index.get("format") != FORMAT
        or not isinstance(index.get("videos"), dict)
    ):
        raise EmtmError(
            f"{path}: not an emtm features index (format {FORMAT!r}); use another --out folder for extraction"
        )
    return index


def check_settings(index: dict[str, Any], settings: dict[str, Any], path: Path) -> None:
    """Refuse to mix features of another backbone, rate, clip length or preprocessing in one folder."""
    for key in SETTINGS:
        if index.get(key) != settings[key]:
            raise EmtmError(
                f"{path}: this folder holds features with {key} = {index.get(key)!r}, but this run asks for "
                f"{settings[key]!r}; use another --out folder, or --overwrite to extract every video again"
            )


def is_done(out: Path, video_id: str, source: Path, index: dict[str, Any]) -> bool:
    """True when `video_id` was extracted from a file of the same size and its .npy has the recorded shape."""
    record = index["videos"].get(video_id)
    if not isinstance(record, dict):
        return False
    try:
        if source.stat().st_size != record.get("bytes"):
            return False
        feats = np.load(out / f"{video_id}.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    return feats.shape == (record.get("clips"), index["dim"]) and feats.dtype == np.float32


def video_ids(paths: list[Path]) -> dict[str, Path]:
    """Video id = file name without suffix; two files with one id are an error that names both."""
    ids: dict[str, Path] = {}
    for path in paths:
        vid = path.stem
        if vid in ids:
            raise EmtmError(
                f"two videos have the id {vid!r}: {ids[vid]} and {path}; the features file name "
                "({vid}.npy) must be unique, so rename one or extract them into separate --out folders"
            )
        if not vid or vid.startswith("."):
            raise EmtmError(f"{path}: cannot make a video id from this file name; rename the file")
        ids[vid] = path
    return ids


def extract_one(
    path: Path, backbone: Backbone, fps: float, clip_seconds: float, batch_size: int
) -> tuple[np.ndarray, VideoInfo]:
    """Clip features (T, D) of one video, and what decoding found."""
    info = VideoInfo()
    size = backbone.preprocessing.get("image_size")
    feats = [
        np.asarray(backbone(batch), dtype=np.float32)
        for batch in sample_frames(path, fps, batch_size, tuple(size) if size else None, info)
    ]
    frames = np.concatenate(feats)
    if frames.shape != (info.frames, backbone.dim):
        raise EmtmError(
            f"backbone {backbone.name!r} gave features of shape {frames.shape} for {info.frames} frames of "
            f"{path}; expected ({info.frames}, {backbone.dim})"
        )
    if not np.isfinite(frames).all():
        raise EmtmError(f"{path}: backbone {backbone.name!r} gave NaN/Inf features")
    return pool_clips(frames, fps, clip_seconds), info


def extract_videos(
    videos: list[str | os.PathLike],
    out: str | os.PathLike,
    backbone: Backbone,
    fps: float = 1.0,
    clip_seconds: float | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    progress: bool = True,
    on_video: Callable[[VideoResult], None] | None = None,
) -> list[VideoResult]:
    """Extract every video of `videos` (files, or folders of video files) into `out`; one result each.

    A video that cannot be read fails with its error recorded, and the others still run. Videos
    already in `out` (same settings, see `is_done`) are skipped unless `overwrite`.
    """
    from tqdm.auto import tqdm

    if not (fps > 0 and math.isfinite(fps)):
        raise EmtmError(f"--fps {fps}: must be a positive number of frames per second")
    clip_seconds = 1.0 / fps if clip_seconds is None else float(clip_seconds)
    if not (clip_seconds * fps >= 1 - 1e-6 and math.isfinite(clip_seconds)):
        raise EmtmError(
            f"--clip-seconds {clip_seconds}: must be at least 1/fps = {1 / fps:g} s, so that every clip "
            "has a sampled frame; raise --fps or --clip-seconds"
        )
    if batch_size < 1:
        raise EmtmError(f"--batch-size {batch_size}: must be at least 1")
    ids = video_ids(find_videos(list(videos)))
    if not ids:
        raise EmtmError(
            f"no video files in {', '.join(map(str, videos))} (looked for files ending in .mp4, .avi, .mkv, "
            ".mov, .webm, ...); name the files directly to use other suffixes"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings_of(backbone, fps, clip_seconds)
    index = read_index(out)
    if index is not None and overwrite:
        index = _drop_other_settings(out, index, settings)
    if index is not None:
        check_settings(index, settings, out / FEATURES_JSON)
    else:
        index = {"format": FORMAT, "version": FORMAT_VERSION, **settings, "videos": {}}
    results = []
    bar = tqdm(ids.items(), desc="extract", unit="video", disable=not progress)
    for vid, path in bar:
        bar.set_postfix_str(path.name[-40:])
        start = time.perf_counter()
        if not overwrite and is_done(out, vid, path, index):
            result = VideoResult(vid, path, "skipped", index["videos"][vid])
        else:
            result = _extract_and_save(out, vid, path, backbone, fps, clip_seconds, batch_size, index)
        result.seconds = time.perf_counter() - start
        results.append(result)
        if on_video is not None:
            on_video(result)
    bar.close()
    return results


def _drop_other_settings(out: Path, index: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any] | None:
    """--overwrite with other settings: forget the old index and delete the .npy files it lists, so the
    folder never mixes two kinds of features. With the same settings the old entries stay."""
    if all(index.get(key) == settings[key] for key in SETTINGS):
        return index
    for vid in index["videos"]:
        if "/" not in vid and vid not in (".", ".."):
            (out / f"{vid}.npy").unlink(missing_ok=True)
    (out / FEATURES_JSON).unlink()
    return None


def _extract_and_save(
    out: Path,
    vid: str,
    path: Path,
    backbone: Backbone,
    fps: float,
    clip_seconds: float,
    batch_size: int,
    index: dict[str, Any],
) -> VideoResult:
    try:
        clips, info = extract_one(path, backbone, fps, clip_seconds, batch_size)
        size = path.stat().st_size
    except EmtmError as err:
        return VideoResult(vid, path, "failed", error=str(err))
    with atomic_open(out / f"{vid}.npy", "wb") as handle:
        np.save(handle, clips, allow_pickle=False)
    record = {
        "source": str(path.resolve()),
        "bytes": size,
        "frames": info.frames,
        "clips": int(clips.shape[0]),
        "duration": round(info.duration, 4),
        "native_fps": info.native_fps,
        "decoded_frames": info.decoded,
    }
    index["videos"][vid] = record
    write_json(out / FEATURES_JSON, index)  # after the .npy: an entry always has its features
    return VideoResult(vid, path, "done", record)
