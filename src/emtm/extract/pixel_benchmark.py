"""`emtm synth --preset pixels`: the real-pixel benchmark, built through the project's own extractor.

1. scripts and frames from `emtm.data.pixels` (Fashion-MNIST photographs in textured scenes);
2. the frames written as H.264 mp4 files (PyAV), exactly what a user's videos are;
3. `emtm extract` (EfficientNet-Lite0 at the frames' size, 2 frames per second pooled into 1 s clips)
   turns them into features: the generator writes no feature itself;
4. Charades-STA annotations (train.txt, test.txt, durations.json), queries.json (each query's kind and
   event) and a data.yaml that `emtm train|distill|ablate|recipe` take as they are.

Videos and features are cached under `cache`/pixels-KEY, KEY a hash of the generator's config, the image
files and the extraction settings, so a second build of the same config renders and extracts nothing.
An interrupted build resumes: finished videos and extracted features are kept (atomic writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from emtm.data.annotations import write_charades_sta, write_durations
from emtm.data.pixels import (
    PIXEL_PRESETS,
    ImageSet,
    PixelConfig,
    PixelScript,
    kind_shares,
    load_images,
    make_scripts,
    render_frames,
)
from emtm.data.records import Sample
from emtm.data.synth import check_both_splits
from emtm.device import resolve_device
from emtm.errors import EmtmError
from emtm.extract.extractor import FEATURES_JSON, extract_videos, read_index
from emtm.io import atomic_open, atomic_path, write_json

GENERATOR_VERSION = 1  # bump when scripts, frames or videos change: old caches are then not reused
BACKBONE = "efficientnet-lite0"
EXTRACT_FPS = 2.0
CLIP_SECONDS = 1.0
MAX_VIDEO_LEN = 64


def default_cache() -> Path:
    """$EMTM_CACHE/pixels, else ~/.cache/emtm/pixels."""
    return Path(os.environ.get("EMTM_CACHE", "~/.cache/emtm")).expanduser() / "pixels"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_settings(cfg: PixelConfig) -> dict[str, Any]:
    return {
        "backbone": BACKBONE,
        "image_size": cfg.frame_size,
        "fps": EXTRACT_FPS,
        "clip_seconds": CLIP_SECONDS,
    }


def cache_key(cfg: PixelConfig, images: ImageSet) -> str:
    """Hash of everything the cached videos and features depend on."""
    spec = {
        "generator": GENERATOR_VERSION,
        "config": asdict(cfg),
        "images": {key: _sha256(path) for key, path in sorted(images.paths.items())},
        "extract": extract_settings(cfg),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """(n, H, W, 3) uint8 frames as an H.264 mp4 (yuv420p, CRF 18), atomically."""
    import av

    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_videos(
    cfg: PixelConfig, scripts: list[PixelScript], images: ImageSet, folder: Path, progress: bool
) -> None:
    from tqdm.auto import tqdm

    todo = [s for s in scripts if not (folder / f"{s.video_id}.mp4").is_file()]
    for script in tqdm(todo, desc="writing videos", unit="video", disable=not progress or not todo):
        write_video(folder / f"{script.video_id}.mp4", render_frames(cfg, script, images), cfg.video_fps)


def _features_complete(folder: Path, video_ids: list[str]) -> bool:
    index = read_index(folder) if folder.is_dir() else None
    return index is not None and all(
        vid in index["videos"] and (folder / f"{vid}.npy").is_file() for vid in video_ids
    )


def cached_features(
    cfg: PixelConfig,
    scripts: list[PixelScript],
    images: ImageSet,
    cache: Path,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """The extracted features folder of these videos in the cache: rendered and extracted only if missing."""
    from emtm.extract.backbones import build_backbone

    root = cache / f"pixels-{cache_key(cfg, images)}"
    features = root / "features"
    ids = [s.video_id for s in scripts]
    if _features_complete(features, ids):
        return features
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    _write_videos(cfg, scripts, images, videos, progress)
    backbone = build_backbone(BACKBONE, device=device, image_size=cfg.frame_size)
    results = extract_videos(
        [videos / f"{vid}.mp4" for vid in ids],
        features,
        backbone,
        fps=EXTRACT_FPS,
        clip_seconds=CLIP_SECONDS,
        batch_size=64,
        progress=progress,
    )
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise EmtmError(
            f"{len(failed)} video(s) could not be extracted, e.g. {failed[0].path}: {failed[0].error}"
        )
    return features


def _link_features(source: Path, target: Path, video_ids: list[str]) -> None:
    """target/{vid}.npy as hard links to the cache (copies where links are not possible)."""
    target.mkdir(parents=True, exist_ok=True)
    for vid in video_ids:
        dst = target / f"{vid}.npy"
        dst.unlink(missing_ok=True)
        try:
            os.link(source / f"{vid}.npy", dst)
        except OSError:
            shutil.copyfile(source / f"{vid}.npy", dst)
    shutil.copyfile(source / FEATURES_JSON, target / FEATURES_JSON)


def script_samples(scripts: list[PixelScript]) -> list[Sample]:
    return [
        Sample(
            f"{s.video_id}_{k}",
            s.video_id,
            s.duration,
            s.events[q.event].start,
            s.events[q.event].end,
            q.sentence,
        )
        for s in scripts
        for k, q in enumerate(s.queries)
    ]


def _queries_json(scripts: dict[str, list[PixelScript]]) -> dict[str, Any]:
    return {
        "kind_shares": {split: kind_shares(split_scripts) for split, split_scripts in scripts.items()},
        "queries": {
            f"{s.video_id}_{k}": {"split": split, "kind": q.kind, "event": q.event, "sentence": q.sentence}
            for split, split_scripts in scripts.items()
            for s in split_scripts
            for k, q in enumerate(s.queries)
        },
    }


def generate_pixels(
    cfg: PixelConfig,
    out_dir: str | os.PathLike,
    images: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Write the real-pixel benchmark to out_dir (Charades-STA layout + features); return its data.yaml."""
    check_both_splits(cfg)
    image_set = load_images(images)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scripts = make_scripts(cfg, image_set)
    every = scripts["train"] + scripts["test"]
    cache_dir = Path(cache).expanduser() if cache is not None else default_cache()
    source = cached_features(cfg, every, image_set, cache_dir, device, progress)
    ids = [s.video_id for s in every]
    _link_features(source, out / "features", ids)
    for split, split_scripts in scripts.items():
        write_charades_sta(script_samples(split_scripts), out / f"{split}.txt")
    write_durations({s.video_id: s.duration for s in every}, out / "durations.json")
    write_json(out / "queries.json", _queries_json(scripts))
    name = next((n for n, preset in PIXEL_PRESETS.items() if preset == cfg), None)
    data = {
        "format": "charades_sta",
        "splits": {"train": "train.txt", "test": "test.txt"},
        "durations": "durations.json",
        "features": "features",
        "word_vectors": "glove-6b-50d",
        "max_video_len": MAX_VIDEO_LEN,
        "name": f"real-pixel benchmark ({name or 'custom'}): Fashion-MNIST items, {BACKBONE} features",
        "pixels": {
            **({"preset": name} if name else {}),
            **asdict(cfg),
            "cache_key": source.parent.name,
            "extract": extract_settings(cfg),
        },
    }
    with atomic_open(out / "data.yaml") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return out / "data.yaml"


def generate_preset(
    preset: str,
    out_dir: str | os.PathLike,
    overrides: dict[str, object] | None = None,
    feature_format: str = "npy",
    images: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Any built-in benchmark by preset name: the synthetic-feature presets (`emtm.data.synth`) or the
    real-pixel ones (`PIXEL_PRESETS`); `overrides` change knobs as `emtm synth --set` does."""

    from emtm.data import synth
    from emtm.device import num_threads

    overrides = dict(overrides or {})
    if preset in synth.PRESETS:
        cfg = synth.with_overrides(synth.PRESETS[preset], overrides)
        return synth.generate(cfg, out_dir, feature_format=feature_format, progress=progress)
    if preset not in PIXEL_PRESETS:
        names = ", ".join([*synth.PRESETS, *PIXEL_PRESETS])
        raise EmtmError(f"unknown preset {preset!r}; choose one of {names}")
    if feature_format != "npy":
        raise EmtmError(
            "the pixel presets write the npy folder of `emtm extract`; leave out --feature-format"
        )
    if "feature_dim" in overrides:
        raise EmtmError(f"--feature-dim: the pixel presets' features are {BACKBONE}'s (1280-d)")
    cfg = synth.with_overrides(PIXEL_PRESETS[preset], overrides)
    device = str(resolve_device(device))
    with num_threads(threads):  # restored afterwards
        return generate_pixels(cfg, out_dir, images, cache, device, progress)
