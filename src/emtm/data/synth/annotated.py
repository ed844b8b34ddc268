"""Synthetic features for real annotations (`synthesize_features_for_annotations`): real sentences and
moments, features made from the sentences' words (`SentenceEncoder`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from emtm.data.annotations import read_annotations
from emtm.data.records import Sample
from emtm.data.synth.config import SynthConfig
from emtm.data.synth.rendering import Layer, _unit, render
from emtm.data.synth.scripts import _rng
from emtm.data.synth.write import _check_format, _write_features, _write_yaml
from emtm.data.text import load_word_vectors, tokenize
from emtm.errors import DataError

PathLike = str | os.PathLike[str]
MAX_VIDEO_LEN = {"charades_sta": 64, "activitynet": 100, "tacos": 256, "jsonl": 128}

_STOP = (
    "a an the this that these those is are was were be been being am 's and or but then while as "
    "of to from for with by at into onto about person someone somebody he she they it him her his "
    "their them its himself herself themselves who which what"
)
STOP_WORDS = frozenset(_STOP.split())


def split_from_filename(path: PathLike) -> str:
    """'train', 'val' or 'test' from a file name; DataError if it names none or several."""
    name = Path(path).name.lower()
    found = [split for split in ("train", "val", "test") if split in name]
    if len(found) != 1:
        raise DataError("cannot tell the split from the file name: it must contain exactly one of "
                        "'train', 'val' or 'test'", path)  # fmt: skip
    return found[0]


class SentenceEncoder:
    """Sentence -> unit vector in feature space: sum over content words of (projected GloVe + hashed)."""

    def __init__(self, dim: int, seed: int, semantic_share: float = 0.5):
        self.dim, self.seed, self.semantic_share = dim, seed, semantic_share
        self.words = load_word_vectors("glove-6b-50d", progress=False)
        rng = _rng(seed, 1 << 42)
        self.projection = rng.standard_normal((dim, self.words.dim)) / np.sqrt(dim)
        self.cache: dict[str, np.ndarray] = {}

    def word(self, word: str) -> np.ndarray:
        if word not in self.cache:
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            hashed = _unit(
                _rng(self.seed, 1 << 43, int.from_bytes(digest, "little")).standard_normal(self.dim)
            )
            glove = self.words.get(word)
            semantic = np.zeros(self.dim) if glove is None else _unit(self.projection @ _unit(glove))
            share = self.semantic_share if glove is not None else 0.0
            self.cache[word] = _unit(np.sqrt(share) * semantic + np.sqrt(1 - share) * hashed)
        return self.cache[word]

    def __call__(self, sentence: str) -> np.ndarray:
        tokens = tokenize(sentence)
        content = [t for t in tokens if t not in STOP_WORDS] or tokens or ["<empty>"]
        return _unit(sum(self.word(t) for t in content))


def _videos_of(samples_per_file: list[list[Sample]], max_videos: int | None) -> dict[str, list[Sample]]:
    """video id -> its samples (moments deduplicated), first-seen order, at most max_videos per file."""
    videos: dict[str, list[Sample]] = {}
    for samples in samples_per_file:
        taken: set[str] = set()
        for sample in samples:
            if sample.video_id not in taken and max_videos is not None and len(taken) >= max_videos:
                continue
            taken.add(sample.video_id)
            moments = videos.setdefault(sample.video_id, [])
            key = (sample.start, sample.end, sample.sentence)
            if all((m.start, m.end, m.sentence) != key for m in moments):
                moments.append(sample)
    return videos


def synthesize_features_for_annotations(
    annotation_paths: list[PathLike],
    fmt: str,
    out_dir: PathLike,
    durations: PathLike | None = None,
    feature_dim: int = 256,
    seed: int = 0,
    feature_format: str = "npy",
    progress: bool = True,
    max_videos: int | None = None,
) -> Path:
    """Synthetic features for real annotation files; returns the data.yaml path in out_dir.

    The data.yaml points to the original annotation files (absolute paths; they are never
    copied). `max_videos` keeps only the first videos of each file (quick tests).
    """
    _check_format(feature_format)
    out_dir = Path(out_dir)
    paths = [Path(p).resolve() for p in annotation_paths]
    splits: dict[str, str] = {}
    for path in paths:
        split = split_from_filename(path)
        if split in splits:
            raise DataError(f"two annotation files for split {split!r}: {splits[split]} and {path}", path)
        splits[split] = str(path)
    per_file = [read_annotations(p, fmt, durations)[0] for p in paths]
    videos = _videos_of(per_file, max_videos)

    cfg = SynthConfig(seed=seed, feature_dim=feature_dim)
    encoder = SentenceEncoder(feature_dim, seed)

    def items() -> Iterator[tuple[str, np.ndarray]]:
        for i, (vid, moments) in enumerate(videos.items()):
            rng = _rng(seed, 1 << 44, i)
            none = np.zeros(feature_dim)  # no action phases: the sentence is the steady part
            layers = [Layer(m.start, m.end, none, none, encoder(m.sentence)) for m in moments]
            scene = cfg.scene_norm * _unit(rng.standard_normal(feature_dim))
            yield vid, render(cfg, max(1, round(moments[0].duration)), layers, scene, rng)

    out_dir.mkdir(parents=True, exist_ok=True)
    features = _write_features(items(), out_dir, feature_format, len(videos), progress)
    data = {
        "format": fmt,
        "splits": splits,
        "features": features,
        "word_vectors": "glove-6b-50d",
        "max_video_len": MAX_VIDEO_LEN.get(fmt, 128),
        "synth": {"mode": "annotations", "feature_dim": feature_dim, "seed": seed, "max_videos": max_videos},
    }
    if isinstance(durations, str | os.PathLike):
        data["durations"] = str(Path(durations).resolve())
    _write_yaml(out_dir / "data.yaml", data)
    return out_dir / "data.yaml"
