"""Decode a video with PyAV and sample frames at a fixed rate, streaming (a batch in memory at a time).

Sampling: time is cut into slots of 1/fps seconds from the first frame; slot k takes the frame on
screen at its middle, (k + 0.5) / fps (the last frame whose timestamp is not after it; when the
video's own rate is lower than `fps`, neighbouring slots can take the same frame). A video of S
seconds gives ceil(S * fps) frames, and row k of the output stands for [k / fps, (k + 1) / fps).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emtm.data.records import VIDEO_SUFFIXES
from emtm.errors import EmtmError


@dataclass
class VideoInfo:
    """What decoding found: the sampled frame count, the decoded length and the video's own rate."""

    frames: int = 0  # sampled frames (rows before pooling into clips)
    duration: float = 0.0  # seconds, first frame to the end of the last one
    native_fps: float | None = None
    decoded: int = 0  # frames the decoder produced


def _av():
    try:
        import av
    except ImportError:
        raise EmtmError("decoding video needs PyAV: pip install 'emtm[video]' (or pip install av)") from None
    return av


def sample_frames(
    path: str | os.PathLike,
    fps: float,
    batch_size: int = 32,
    size: tuple[int, int] | None = None,
    info: VideoInfo | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 RGB batches (n <= batch_size, H, W, 3) of frames sampled at `fps` from `path`.

    `size` (height, width) resizes while decoding (cheaper than afterwards). `info`, if given, is
    filled in as decoding goes; it is complete once the iterator is exhausted. Missing, unreadable or
    empty videos raise an EmtmError that names the file.
    """
    av = _av()
    path = Path(path)
    if fps <= 0 or not math.isfinite(fps):
        raise EmtmError(f"--fps {fps}: must be a positive number of frames per second")
    if not path.is_file():
        raise EmtmError(f"{path}: video file not found")
    info = info if info is not None else VideoInfo()
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise EmtmError(f"{path}: cannot open as a video ({err}); is it a complete video file?") from None
    with container:
        if not container.streams.video:
            raise EmtmError(f"{path}: no video stream in this file (not a video, or truncated)")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        info.native_fps = float(rate) if rate else None
        step = 1.0 / float(rate) if rate else 0.0
        reformat = {"format": "rgb24"}
        if size is not None:
            reformat.update(height=int(size[0]), width=int(size[1]), interpolation="AREA")
        batch: list[np.ndarray] = []
        t0: float | None = None
        last_t = 0.0
        shown = None  # the frame on screen since `last_t`, converted to an array only when a slot takes it
        image: np.ndarray | None = None
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else info.decoded * step
                info.decoded += 1
                if t0 is None:
                    t0 = t
                t = max(t - t0, last_t)  # guard against timestamps that step back
                # every slot whose middle comes before this frame shows the previous one
                while shown is not None and (info.frames + 0.5) / fps < t - 1e-9:
                    image = shown.to_ndarray(**reformat) if image is None else image
                    batch.append(image)
                    info.frames += 1
                    if len(batch) >= batch_size:
                        yield np.stack(batch)
                        batch = []
                shown, image, last_t = frame, None, t
        except av.FFmpegError as err:
            raise EmtmError(
                f"{path}: decoding failed after {info.decoded} frames ({err}); the file may be truncated "
                "or corrupt"
            ) from None
        if shown is None:
            raise EmtmError(f"{path}: no decodable video frames (empty or corrupt video stream)")
        info.duration = last_t + step
        while info.frames < math.ceil(info.duration * fps - 1e-6):  # the slots the last frame covers
            image = shown.to_ndarray(**reformat) if image is None else image
            batch.append(image)
            info.frames += 1
            if len(batch) >= batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)


def find_videos(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and the video files (by suffix, sorted, not recursive) of each folder."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            found.append(path)  # a missing file is reported per video, and the others still run
    return found
