"""Small generated videos with known content: coloured shapes appear on a plain background at known times.

Used by the tests, the end-to-end check (shapes_e2e.py, benchmarks/video_e2e.py), the other benchmarks
that need video files and docs/VIDEO.md: each shape event is described by a sentence ("a red square
appears.") with its true start and end, in Charades-STA format. A helper module of benchmarks/, not a
script (the tests import it through tests/conftest.py).
Nothing here is a binary in the repository: the videos are written on demand with PyAV.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emtm.errors import EmtmError
from emtm.io import atomic_open, atomic_path, write_json

COLOURS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 60, 230)}
SHAPES = ("square", "circle", "triangle")
# the three events of the end-to-end check: colour and shape go together, so either word identifies it
EVENTS = (("red", "square"), ("blue", "circle"), ("green", "triangle"))
BACKGROUND = (128, 128, 128)


@dataclass(frozen=True)
class ShapeEvent:
    """A `colour` `shape` visible from `start` to `end` seconds, centred at (`x`, `y`) in [0, 1]."""

    colour: str
    shape: str
    start: float
    end: float
    x: float = 0.5
    y: float = 0.5

    @property
    def sentence(self) -> str:
        return f"a {self.colour} {self.shape} appears."


def shape_mask(shape: str, size: int, x: float, y: float, radius: float) -> np.ndarray:
    """Boolean (size, size) mask of a square, circle or (upward) triangle of half-width `radius` px."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = x * size, y * size
    dx, dy = xx - cx, yy - cy
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "triangle":  # apex at the top, base at the bottom
        frac = (dy + radius) / (2 * radius)  # 0 at the apex, 1 at the base
        return (frac >= 0) & (frac <= 1) & (np.abs(dx) <= frac * radius)
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def render(events: list[ShapeEvent], t: float, size: int) -> np.ndarray:
    """The uint8 RGB frame (size, size, 3) at time `t`: the events visible at `t` on the background."""
    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:] = BACKGROUND
    for ev in events:
        if ev.start <= t < ev.end:
            frame[shape_mask(ev.shape, size, ev.x, ev.y, 0.2 * size)] = COLOURS[ev.colour]
    return frame


def write_video(
    path: str | os.PathLike,
    events: list[ShapeEvent],
    duration: float,
    size: int = 64,
    fps: int = 10,
    codec: str = "mpeg4",
) -> Path:
    """Encode `duration` seconds of `events` at `fps` frames per second (atomically) and return the path."""
    import av

    path = Path(path)
    n_frames = int(round(duration * fps))
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=_container(path)) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}  # near-lossless: flat colours stay flat
        for i in range(n_frames):
            image = render(events, (i + 0.5) / fps, size)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _container(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".mp4": "mp4", ".avi": "avi", ".mkv": "matroska", ".mov": "mov"}.get(suffix, "mp4")


def random_events(
    rng: np.random.Generator, duration: float, min_len: float = 2.0, max_len: float = 5.0
) -> list[ShapeEvent]:
    """One event of each of EVENTS, at random times (they may overlap) and in distinct corners."""
    corners = rng.permutation([(0.28, 0.28), (0.72, 0.28), (0.28, 0.72), (0.72, 0.72)])
    events = []
    for (colour, shape), (x, y) in zip(EVENTS, corners):
        length = float(rng.uniform(min_len, min(max_len, duration - 0.5)))
        start = float(rng.uniform(0.0, duration - length))
        events.append(
            ShapeEvent(colour, shape, round(start, 2), round(start + length, 2), float(x), float(y))
        )
    return events


def write_dataset(
    out: str | os.PathLike,
    n_videos: int = 40,
    test_fraction: float = 0.25,
    seed: int = 0,
    size: int = 64,
    fps: int = 10,
    min_duration: float = 8.0,
    max_duration: float = 12.0,
) -> Path:
    """Write `out`/videos/*.mp4 and Charades-STA annotations (train.txt, test.txt, durations.json).

    Each video shows a red square, a blue circle and a green triangle, each for 2-5 s at random
    times; each gives one query. Returns the folder. The videos are split by video, never by query.
    """
    if n_videos < 2:
        raise EmtmError(f"n_videos={n_videos}: need at least 2 (some to train on, some to test)")
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_test = max(1, round(n_videos * test_fraction))
    lines: dict[str, list[str]] = {"train": [], "test": []}
    durations: dict[str, float] = {}
    events_by_video: dict[str, list[dict]] = {}
    for i in range(n_videos):
        vid = f"shapes{i:03d}"
        duration = float(round(rng.uniform(min_duration, max_duration) * fps) / fps)
        events = random_events(rng, duration)
        write_video(out / "videos" / f"{vid}.mp4", events, duration, size=size, fps=fps)
        durations[vid] = duration
        split = "test" if i >= n_videos - n_test else "train"
        lines[split] += [f"{vid} {ev.start:.2f} {ev.end:.2f}##{ev.sentence}" for ev in events]
        events_by_video[vid] = [ev.__dict__ for ev in events]
    for split, rows in lines.items():
        with atomic_open(out / f"{split}.txt") as handle:
            handle.write("\n".join(rows) + "\n")
    write_json(out / "durations.json", durations)
    write_json(out / "events.json", events_by_video)
    return out


def write_data_yaml(
    root: str | os.PathLike, features: str | os.PathLike, max_video_len: int = 64, name: str = "data.yaml"
) -> Path:
    """A data.yaml (`root`/`name`) for `write_dataset`'s annotations and an `emtm extract` features folder."""
    root = Path(root)
    spec = {
        "format": "charades_sta",
        "splits": {"train": "train.txt", "test": "test.txt"},
        "durations": "durations.json",
        "features": os.path.relpath(Path(features).resolve(), root.resolve()),
        "max_video_len": max_video_len,
        "name": "generated shapes videos",
    }
    path = root / name
    with atomic_open(path) as handle:
        json.dump(spec, handle, indent=2)  # JSON is YAML
    return path
