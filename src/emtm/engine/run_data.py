"""What a training run reads: the prepared splits, the vocabulary and word vectors, the datasets and,
for a distilled run, the teachers' cached distributions beside each batch."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from emtm.config import TrainConfig, load_data_config
from emtm.data.dataset import GroundingDataset, Prepared, prepare
from emtm.data.text import Vocab, load_word_vectors
from emtm.distill.cache import teachers_holdout_seed
from emtm.distill.mixtures import fit_global_weights, validation_dists
from emtm.engine.checkpoint import SpecInfo
from emtm.errors import ConfigError, DataError
from emtm.io import read_json

log = logging.getLogger("emtm.train")


@dataclass
class RunData:
    prepared: Prepared
    vocab: Vocab
    spec: SpecInfo
    word_vectors: torch.Tensor | None
    datasets: dict[str, GroundingDataset]


def build_run_data(cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool | None = None) -> RunData:
    data_cfg = load_data_config(cfg.data)
    data_cfg.require_split("train", "training needs one (its vocabulary and its queries)")
    prepared = prepare(data_cfg, cfg.holdout_seed, fold=cfg.fold)
    train_samples = prepared.splits["train"].samples
    if resume and (run_dir / "vocab.json").exists():
        vocab, matrix = Vocab.load(run_dir / "vocab.json"), None
        word_dim = int(read_json(run_dir / "config.json")["spec"]["word_dim"])
    else:
        word_vectors = load_word_vectors(
            data_cfg.word_vector_spec(), progress=cfg.run.progress if progress is None else progress
        )
        vocab = Vocab.build((s.sentence for s in train_samples), word_vectors)
        matrix = torch.from_numpy(vocab.embedding_matrix(word_vectors))
        word_dim = word_vectors.dim
    spec = SpecInfo(
        prepared.store.dim,
        data_cfg.max_video_len,
        len(vocab),
        word_dim,
        vocab.n_chars,
        data_cfg.max_query_len,
        data_cfg.max_word_chars,
    )
    datasets = {
        name: GroundingDataset(split.samples, prepared.store, vocab, data_cfg)
        for name, split in prepared.splits.items()
    }
    return RunData(prepared, vocab, spec, matrix, datasets)


def with_teachers_holdout(cfg: TrainConfig) -> TrainConfig:
    """A distilled student holds out the validation videos its teachers held out (`val_seed` from their
    caches), unless `run.val_seed` is given: its model selection then reads no query a teacher saw."""
    if not cfg.teachers or cfg.run.val_seed is not None:
        return cfg
    seed = teachers_holdout_seed(cfg.teachers)
    if seed is None:
        return cfg
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"val_seed": seed})})


def with_fitted_weights(cfg: TrainConfig) -> TrainConfig:
    """`fixed_weights: validation` replaced by the global [start, end] weight of each teacher with the
    lowest mean hard loss of its mixture on the run's validation queries (`fit_global_weights`), which
    the teachers' caches hold when those queries are train videos held out; other configs as they are."""
    if cfg.model_options.get("fixed_weights") != "validation":
        return cfg
    if not cfg.teachers:
        raise ConfigError("model_options.fixed_weights=validation weighs teachers: give their caches")
    try:
        held = validation_dists(cfg.data, cfg.teachers, cfg.holdout_seed, cfg.fold)
    except DataError as err:
        raise DataError(
            f"{err}. model_options.fixed_weights=validation fits the weights on the validation queries, "
            "read from the teachers' train-split caches: use a data.yaml without a val split (its "
            "validation videos are then held out of train) or give fitted weights"
        ) from err
    weights = [[round(float(v), 4) for v in pair] for pair in fit_global_weights(held)]
    log.info("fixed teacher weights fitted on %d validation queries: %s", len(held.dists), weights)
    options = {**cfg.model_options, "fixed_weights": weights}
    return cfg.model_copy(update={"model_options": options})


def with_teachers(
    cfg: TrainConfig, train_set: GroundingDataset
) -> tuple[Dataset, Callable[[list[dict]], dict[str, torch.Tensor]]]:
    """Wrap the training set so each batch carries the cached teachers' distributions."""
    from emtm.distill.cache import TeacherCache, check_compatible
    from emtm.distill.data import TeacherDataset, collate_with_teachers

    caches = [TeacherCache(path) for path in cfg.teachers]
    kau_caches = [TeacherCache(path) for path in cfg.kau_teachers]
    for cache in caches + kau_caches:
        check_compatible(cache, cfg.data, "train")
    collate_fn = partial(collate_with_teachers, max_chars=train_set.cfg.max_word_chars)
    return TeacherDataset(train_set, caches, kau_caches), collate_fn


def split_summary(data: RunData) -> dict[str, Any]:
    out = {}
    for name, split in data.prepared.splits.items():
        out[name] = {
            "source": split.source,
            "n_queries": len(split.samples),
            "n_missing_videos": split.n_missing_videos,
        }
        if split.report is not None and name != "val":
            report = split.report
            out[name].update(n_read=report.n_read, n_clipped=report.n_clipped, n_dropped=report.n_dropped)
    return out
