"""From a data.yaml to batches: splits, the validation hold-out, vocabulary, torch Dataset and collate."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emtm.config import DataConfig
from emtm.data.annotations import read_annotations
from emtm.data.features import FeatureStore, key_examples, open_feature_store, resample_features
from emtm.data.grid import time_to_index
from emtm.data.records import ReadReport, Sample
from emtm.data.text import Vocab, tokenize
from emtm.errors import DataError

log = logging.getLogger("emtm.data")


@dataclass
class SplitData:
    samples: list[Sample]
    report: ReadReport | None = None
    n_missing_videos: int = 0
    source: str = ""


def read_split(cfg: DataConfig, split: str) -> SplitData:
    path = cfg.split_path(split)
    samples, report = read_annotations(path, cfg.format, cfg.duration_paths())
    return SplitData(samples, report, source=str(path))


def hold_out_videos(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split by video (never by query) into (train, val) with a seeded `fraction` of the videos in val."""
    videos = sorted({s.video_id for s in samples})
    rng = np.random.default_rng(seed)
    n_val = max(1, round(fraction * len(videos))) if len(videos) > 1 else 0
    val_videos = set(rng.permutation(videos)[:n_val].tolist())
    return [s for s in samples if s.video_id not in val_videos], [
        s for s in samples if s.video_id in val_videos
    ]


def in_fold(samples: list[Sample], fold: tuple[int, int]) -> list[bool]:
    """Per sample: is its video in fold i of k? A video's fold depends on its id alone (a hash), not on
    the run's seed or on which other videos are present, so the k runs of one out-of-fold set and the
    export that combines them always agree."""
    index, k = fold
    return [video_fold(s.video_id, k) == index for s in samples]


def video_fold(video_id: str, k: int) -> int:
    digest = hashlib.sha256(f"emtm-fold:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % k


def load_splits(
    cfg: DataConfig,
    seed: int,
    names: tuple[str, ...] = ("train", "val", "test"),
    fold: tuple[int, int] | None = None,
) -> dict[str, SplitData]:
    """Read train/val/test. Without a val split, hold out a seeded share of the train videos as val.
    With `fold` (i, k), the train videos of fold i are left out first (see `in_fold`)."""
    splits: dict[str, SplitData] = {}
    for name in names:
        if name in cfg.splits:
            splits[name] = read_split(cfg, name)
    if fold is not None and "train" in splits:
        train = splits["train"]
        kept = [s for s, out in zip(train.samples, in_fold(train.samples, fold)) if not out]
        splits["train"] = SplitData(
            kept, train.report, source=f"{train.source} (without fold {fold[0]}/{fold[1]})"
        )
    if "val" in names and "val" not in splits and "train" in splits:
        train = splits["train"]
        kept, held = hold_out_videos(train.samples, cfg.val_fraction, seed)
        splits["train"] = SplitData(kept, train.report, source=train.source)
        splits["val"] = SplitData(
            held, None, source=f"{train.source} (held-out {cfg.val_fraction:.0%} of videos)"
        )
    return splits


def filter_missing(split: SplitData, store: FeatureStore, skip_missing: bool, name: str) -> SplitData:
    """Fail on (or, when asked, drop and count) queries whose video has no features."""
    present = {vid: vid in store for vid in {s.video_id for s in split.samples}}
    missing = sorted(v for v, ok in present.items() if not ok)
    if missing and not skip_missing:
        raise DataError(
            f"{len(missing)} video(s) of split {name!r} have no features in {store.path}, "
            f"e.g. {missing[:3]}, while the store's keys look like {key_examples(store)}; fix the "
            "features path or the video ids, or set skip_missing_videos: true in data.yaml to skip them",
        )
    kept = [s for s in split.samples if present[s.video_id]]
    if missing:
        n_skipped = len(split.samples) - len(kept)
        log.warning(
            "split %s: skipped %d queries of %d videos without features", name, n_skipped, len(missing)
        )
    return SplitData(kept, split.report, len(missing), split.source)


@dataclass
class Prepared:
    cfg: DataConfig
    store: FeatureStore
    splits: dict[str, SplitData] = field(default_factory=dict)


def prepare(
    cfg: DataConfig,
    seed: int,
    names: tuple[str, ...] = ("train", "val", "test"),
    fold: tuple[int, int] | None = None,
) -> Prepared:
    store = open_feature_store(cfg.features_path())
    splits = {
        name: filter_missing(split, store, cfg.skip_missing_videos, name)
        for name, split in load_splits(cfg, seed, names, fold).items()
    }
    extracted = extraction_record(cfg.features_path())
    for name, split in splits.items():
        check_not_empty(split, name)
        warn_duplicates(split, name)
        if extracted:
            warn_duration_mismatch(split, name, extracted)
    return Prepared(cfg, store, splits)


def extraction_record(features: Path) -> dict | None:
    """The `features.json` that `emtm extract` writes beside its .npy files (clip length and each
    video's clips), or None for other stores or an unreadable record."""
    record = Path(features) / "features.json" if Path(features).is_dir() else None
    if record is None or not record.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        return (
            data if float(data.get("clip_seconds", 0)) > 0 and isinstance(data.get("videos"), dict) else None
        )
    except (ValueError, TypeError, OSError):
        return None


def warn_duration_mismatch(split: SplitData, name: str, extracted: dict) -> None:
    """One warning when annotated durations disagree with the extracted features by more than a clip:
    the moments would then be placed at the wrong clips."""
    clip = float(extracted["clip_seconds"])
    off = []
    for video_id, duration in {s.video_id: s.duration for s in split.samples}.items():
        entry = extracted["videos"].get(video_id) or {}
        clips = entry.get("clips")
        if isinstance(clips, int | float) and abs(clips * clip - duration) > clip:
            off.append(f"{video_id} ({duration:g} s annotated, {clips} clips of {clip:g} s)")
    if off:
        log.warning(
            "split %s: %d video(s) whose annotated duration disagrees with the features by more than a "
            "clip, e.g. %s; check the durations file and the extraction's --fps / --clip-seconds",
            name, len(off), off[:2],
        )  # fmt: skip


def warn_duplicates(split: SplitData, name: str) -> None:
    """One warning when queries repeat (same video, sentence and moment): they weigh twice in training
    and in the metrics."""
    seen: set[tuple] = set()
    repeats = []
    for s in split.samples:
        key = (s.video_id, " ".join(s.sentence.lower().split()), round(s.start, 3), round(s.end, 3))
        if key in seen:
            repeats.append(s.sample_id)
        seen.add(key)
    if repeats:
        log.warning(
            "split %s (%s): %d queries repeat an earlier one (same video, sentence and moment), e.g. %s; "
            "they count twice in training and in the metrics",
            name, split.source, len(repeats), repeats[:3],
        )  # fmt: skip


def check_not_empty(split: SplitData, name: str) -> None:
    """A DataError when a split holds no query, saying what was read and what was dropped."""
    if split.samples:
        return
    report = split.report
    if report is not None and report.n_read:
        why = (
            f"all {report.n_read} queries read were dropped ({report.n_dropped} with start >= end or "
            f"times outside the video, see the warnings above) or skipped"
        )
    elif report is not None:
        why = "the file holds no query"
    else:
        why = "no video was left for it"
    raise DataError(f"split {name!r} ({split.source}) is empty: {why}; a split needs at least one query")


def encode_query(
    sentence: str, vocab: Vocab, max_len: int, max_chars: int
) -> tuple[list[int], list[list[int]]]:
    tokens = tokenize(sentence)[:max_len] or [vocab.words[1]]
    return vocab.encode(tokens), vocab.encode_chars(tokens, max_chars)


def warn_unknown_queries(samples: list[Sample], vocab: Vocab) -> None:
    """One warning when some queries have no word the vocabulary knows: the model sees only UNK there."""
    known = set(vocab.words[2:])
    blind = [s.sample_id for s in samples if not any(w in known for w in tokenize(s.sentence))]
    if blind:
        log.warning(
            "%d of %d queries have no word in the model's vocabulary (%d words), e.g. %s: the model reads "
            "them as unknown words only; check the language or the word vectors",
            len(blind), len(samples), len(known), blind[:3],
        )  # fmt: skip


class GroundingDataset(Dataset):
    """One item per query: resampled video features, encoded query and clip-index labels."""

    def __init__(self, samples: list[Sample], store: FeatureStore, vocab: Vocab, cfg: DataConfig):
        self.samples = samples
        self.store = store
        self.vocab = vocab
        self.cfg = cfg
        warn_unknown_queries(samples, vocab)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        video = resample_features(self.store.load(sample.video_id), self.cfg.max_video_len)
        words, chars = encode_query(
            sample.sentence, self.vocab, self.cfg.max_query_len, self.cfg.max_word_chars
        )
        start_index, end_index = time_to_index(sample.start, sample.end, sample.duration, len(video))
        return {
            "index": index,
            "video": video,
            "words": words,
            "chars": chars,
            "start_index": start_index,
            "end_index": end_index,
            "start_frac": sample.start / sample.duration,
            "end_frac": sample.end / sample.duration,
            "duration": sample.duration,
        }


def collate(items: list[dict], max_chars: int = 16) -> dict[str, torch.Tensor]:
    """Pad to the longest video and query of the batch; masks are True on valid positions."""
    b = len(items)
    max_l = max(len(it["video"]) for it in items)
    max_n = max(len(it["words"]) for it in items)
    dim = items[0]["video"].shape[1]
    video = torch.zeros(b, max_l, dim)
    video_mask = torch.zeros(b, max_l, dtype=torch.bool)
    words = torch.zeros(b, max_n, dtype=torch.long)
    chars = torch.zeros(b, max_n, max_chars, dtype=torch.long)
    query_mask = torch.zeros(b, max_n, dtype=torch.bool)
    for i, it in enumerate(items):
        length, n = len(it["video"]), len(it["words"])
        video[i, :length] = torch.as_tensor(np.array(it["video"], dtype=np.float32))
        video_mask[i, :length] = True
        words[i, :n] = torch.tensor(it["words"])
        query_mask[i, :n] = True
        for j, word_chars in enumerate(it["chars"]):
            chars[i, j, : len(word_chars)] = torch.tensor(word_chars[:max_chars])
    batch = {
        "video": video,
        "video_mask": video_mask,
        "words": words,
        "chars": chars,
        "query_mask": query_mask,
    }
    for key in ("index", "start_index", "end_index"):
        batch[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    for key in ("start_frac", "end_frac", "duration"):
        batch[key] = torch.tensor([it[key] for it in items], dtype=torch.float32)
    return batch


def split_dataset(
    data_yaml: str | Path, split: str, vocab: Vocab, seed: int = 0, fold: tuple[int, int] | None = None
) -> GroundingDataset:
    """The GroundingDataset of one split of a data.yaml (val: the dataset's or the seeded hold-out;
    with `fold`, as a run trained without that fold sees it)."""
    from emtm.config import load_data_config

    cfg = load_data_config(data_yaml)
    prepared = prepare(cfg, seed, names=("train", "val") if split == "val" else (split,), fold=fold)
    if split not in prepared.splits:
        raise DataError(f"split {split!r} not found in {data_yaml} (it has {', '.join(cfg.splits)})")
    return GroundingDataset(prepared.splits[split].samples, prepared.store, vocab, cfg)
