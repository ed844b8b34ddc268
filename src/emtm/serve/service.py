"""What the server does, without HTTP: load the model once, extract and cache video features, ground
queries and read off the model's start/end probability per clip."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emtm.api import Grounder
from emtm.engine.inference import PreparedVideo, WindowedVideo, encoded_batch, query_batch
from emtm.errors import EmtmError
from emtm.io import atomic_path, write_json
from emtm.models.layers import masked_softmax

MEMORY_ITEMS = 32  # videos' features kept in memory (the disk cache keeps all)

# (video path) -> ((T, D) float32 features, duration in seconds)
Extractor = Callable[[Path], tuple[np.ndarray, float]]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@torch.no_grad()
def probability_curves(
    grounder: Grounder, prepared: PreparedVideo, query: str
) -> dict[str, list[float]] | None:
    """The model's start and end probability of each clip for `query` (softmax over the clips), with the
    clip centres in seconds; None for a model without per-clip start/end logits (prior, regression)."""
    run = grounder.run
    model = run.model.eval()
    batch = query_batch(run, [(prepared, query)])
    video_mask = batch["video_mask"]
    encoded = encoded_batch([prepared], video_mask.shape[1])
    if encoded is not None:
        outputs = model.ground_encoded(
            encoded, video_mask, batch["words"], batch["chars"], batch["query_mask"]
        )
    else:
        outputs = model(batch)
    if "start_logits" not in outputs or "end_logits" not in outputs:
        return None
    start = masked_softmax(outputs["start_logits"].float(), video_mask)[0].cpu().numpy()
    end = masked_softmax(outputs["end_logits"].float(), video_mask)[0].cpu().numpy()
    step = prepared.duration / prepared.n_clips
    times = [round((i + 0.5) * step, 4) for i in range(prepared.n_clips)]
    return {"times": times, "start": [float(x) for x in start], "end": [float(x) for x in end]}


def window_curves(grounder: Grounder, video: WindowedVideo, query: str) -> dict[str, list[float]] | None:
    """The start and end curves of a long video grounded in sliding windows, on its own T clips: each
    window's curves (`probability_curves`) placed on the clips it covers, averaged where windows overlap
    and renormalised, so the curves and the moments come from the same windows and share one time axis."""
    n = video.n_clips
    start, end, cover = np.zeros(n), np.zeros(n), np.zeros(n)
    for prepared, (first, stop) in zip(video.windows, video.spans, strict=True):
        curves = probability_curves(grounder, prepared, query)
        if curves is None:
            return None
        start[first:stop] += curves["start"]
        end[first:stop] += curves["end"]
        cover[first:stop] += 1
    start, end = start / np.maximum(cover, 1), end / np.maximum(cover, 1)
    start, end = start / start.sum(), end / end.sum()
    step = video.clip_seconds
    return {
        "times": [round((i + 0.5) * step, 4) for i in range(n)],
        "start": [float(x) for x in start],
        "end": [float(x) for x in end],
    }


class GroundingService:
    """One loaded model, its extractor (built on first use) and a per-content feature cache."""

    def __init__(self, model_dir: str | Path, cache_dir: str | Path, device: str = "cpu"):
        self.model_dir = Path(model_dir)
        self.grounder = Grounder.load(model_dir, device=device)
        self.cache_dir = Path(cache_dir)
        self.spec, self.extract_refusal = self._feature_spec()
        self._backbone: Any = None
        self._backbone_lock = threading.Lock()
        self._memory: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self.extractor: Extractor = self._extract_with_backbone

    # ------------------------------------------------------------------------------ feature spec
    def _feature_spec(self) -> tuple[tuple[str, float, float] | None, str | None]:
        """(backbone, fps, clip seconds) from the model's config.json, or why raw video cannot be used."""
        from emtm.extract.ground import feature_spec

        try:
            backbone, fps, clip_seconds = feature_spec(self.grounder.config, str(self.model_dir))
        except EmtmError as err:
            return None, f"this model cannot ground raw video files: {err}"
        if not (math.isfinite(fps) and clip_seconds * fps >= 1 - 1e-6):
            return None, f"{self.model_dir}: recorded fps {fps} and clip seconds {clip_seconds} do not fit"
        return (backbone, fps, clip_seconds), None

    def info(self) -> dict[str, Any]:
        config = self.grounder.config
        return {
            "model": self.model_dir.name,  # never an absolute server path
            "architecture": config["architecture"]["name"],
            "feature_dim": self.grounder.feature_dim,
            "max_video_len": self.grounder.max_video_len,
            "metrics": config.get("metrics", {}),
            "training": config.get("training", {}),
            "extraction": {
                "available": self.spec is not None,
                "refusal": self.extract_refusal,
                "backbone": self.spec[0] if self.spec else None,
                "fps": self.spec[1] if self.spec else None,
                "clip_seconds": self.spec[2] if self.spec else None,
            },
        }

    # ------------------------------------------------------------------------------ features cache
    def cache_key(self, path: Path, known_sha: str | None = None) -> str | None:
        """The cache key of a video file when its content hash is already known (no I/O), else None."""
        if self.spec is None:
            raise EmtmError(self.extract_refusal or "this model cannot ground raw video files")
        stat = path.stat()
        sha = known_sha or self._hashes.get((str(path), stat.st_size, stat.st_mtime_ns))
        if sha is None:
            return None
        backbone, fps, clip_seconds = self.spec
        spec = f"{backbone}|{fps:g}|{clip_seconds:g}".encode()
        return f"{sha[:40]}-{hashlib.sha256(spec).hexdigest()[:12]}"

    def remember_hash(self, path: Path, sha: str) -> None:
        stat = path.stat()
        self._hashes[(str(path), stat.st_size, stat.st_mtime_ns)] = sha

    def feature_bytes(self, sha: str) -> int:
        """Bytes on disk of the cached features of the video whose content hash starts with `sha`."""
        folder = self.cache_dir / "features"
        return sum(p.stat().st_size for p in folder.glob(f"{sha[:40]}*") if p.is_file())

    def forget(self, sha: str, owner: Path) -> None:
        """Drop the video whose content hash starts with `sha` (>= 32 hex digits) from every file under
        `owner` (an uploads folder): its hashes, and its cached features on disk and in memory, unless a
        video elsewhere (a served folder) with the same content still uses them."""
        prefix, owner = sha[:40], owner.resolve()
        with self._lock:
            for stat_key in [k for k, v in self._hashes.items() if v.startswith(prefix)]:
                if Path(stat_key[0]).parent == owner:
                    del self._hashes[stat_key]
            if any(v.startswith(prefix) for v in self._hashes.values()):
                return
            for key in [k for k in self._memory if k.startswith(prefix)]:
                del self._memory[key]
        for path in (self.cache_dir / "features").glob(f"{prefix}*"):
            path.unlink(missing_ok=True)

    def cached(self, key: str) -> tuple[np.ndarray, float] | None:
        """Features and duration from memory or the disk cache, or None."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        npy, meta = self.cache_dir / "features" / f"{key}.npy", self.cache_dir / "features" / f"{key}.json"
        if not (npy.is_file() and meta.is_file()):
            return None
        try:
            import json

            duration = float(json.loads(meta.read_text(encoding="utf-8"))["duration"])
            features = np.load(npy, allow_pickle=False)
        except (OSError, ValueError, KeyError):
            return None  # a damaged cache entry is extracted again
        self._keep(key, features, duration)
        return features, duration

    def _keep(self, key: str, features: np.ndarray, duration: float) -> None:
        with self._lock:
            self._memory[key] = (features, duration)
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_ITEMS:
                self._memory.popitem(last=False)

    def features_of(self, path: Path, known_sha: str | None = None) -> tuple[np.ndarray, float, bool]:
        """(features, duration, from_cache) of a video file: hashed, looked up, else extracted and cached."""
        key = self.cache_key(path, known_sha)
        if key is None:
            self.remember_hash(path, file_sha256(path))
            key = self.cache_key(path)
        hit = self.cached(key)
        if hit is not None:
            return hit[0], hit[1], True
        features, duration = self.extractor(path)
        folder = self.cache_dir / "features"
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{key}.npy") as tmp, tmp.open("wb") as handle:
            np.save(handle, features, allow_pickle=False)
        write_json(
            folder / f"{key}.json", {"duration": duration, "source": path.name, "spec": list(self.spec)}
        )
        self._keep(key, features, duration)
        return features, duration, False

    def _extract_with_backbone(self, path: Path) -> tuple[np.ndarray, float]:
        from emtm.extract.extractor import extract_one
        from emtm.extract.ground import check_backbone

        backbone_name, fps, clip_seconds = self.spec
        with self._backbone_lock:
            if self._backbone is None:
                from emtm.extract.backbones import build_backbone

                backbone = build_backbone(backbone_name, None, self.grounder.device)
                check_backbone(backbone, backbone_name, self.grounder.feature_dim, str(self.model_dir))
                self._backbone = backbone
        try:
            features, info = extract_one(path, self._backbone, fps, clip_seconds, 32)
        except EmtmError as err:
            raise EmtmError(f"{path.name}: {err}") from None
        except Exception as err:  # a file PyAV cannot decode
            raise EmtmError(
                f"{path.name}: could not decode this video ({type(err).__name__}: {err})"
            ) from None
        return features, float(info.duration)

    # ------------------------------------------------------------------------------ grounding
    def ground(self, features: np.ndarray, duration: float | None, query: str, top_k: int) -> dict[str, Any]:
        """Top-k moments (the Grounder API's answer) and the start/end probability curves."""
        started = time.perf_counter()
        video = self.grounder.encode_video(features, duration)
        moments = video.ground(query, top_k=top_k)
        moments = moments if isinstance(moments, list) else [moments]
        if video.windows:  # the windows the moments come from, stitched onto the video's clips
            curves = window_curves(self.grounder, video.prepared, query)
        else:
            curves = probability_curves(self.grounder, video.prepared, query)
        return {
            "duration": video.duration,
            "n_clips": video.prepared.n_clips,
            "moments": [{"start": m.start, "end": m.end, "score": m.score} for m in moments],
            "curves": curves,
            "ground_seconds": round(time.perf_counter() - started, 4),
        }
