"""Running a trained emtm teacher for distillation: `export_teacher` (`emtm teachers export`) runs the
teacher of a run directory over a split and writes its unified outputs as a teacher cache
(`emtm.distill.cache`), and, to calibrate it, runs it over the validation queries its run held out.

Out-of-fold caches (`export_teacher` with k runs trained with `emtm train --fold i/k`, i = 0..k-1): each
run gives its outputs on the train queries of the one fold it did not see, so every entry is the
teacher's output on a query it was not trained on, as on new queries (meta.folds = k; 0 otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emtm.config import load_data_config
from emtm.data.annotations import annotation_hash
from emtm.data.dataset import GroundingDataset, collate, in_fold, prepare
from emtm.data.records import Sample
from emtm.distill.cache.layout import PathLike
from emtm.distill.cache.write import Split, batch_rows, lengths_mask, read_split, unify_options, write_cache
from emtm.distill.calibrate import HeldOutChunk, fit_calibration, parameter_of, truth_indices
from emtm.distill.unify import unify
from emtm.engine.checkpoint import LoadedRun, load_run
from emtm.engine.evaluate import to_device
from emtm.errors import ConfigError, DataError, EmtmError
from emtm.models.base import GroundingModel


def export_teacher(
    run_dirs: PathLike | list[PathLike],
    data_yaml: PathLike,
    split: str = "train",
    out: PathLike | None = None,
    temperature: float | None = None,
    sigma_frac: float | None = None,
    map_reduce: str = "sum",
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
    calibrate: bool = False,
) -> Path:
    """Run the teacher of a run directory over `split` and cache its unified outputs (default
    RUN/teacher_SPLIT.h5). Given the k runs of one out-of-fold set (`emtm train --fold i/k`), each
    gives the outputs on the fold it was trained without, and together they cover the train split.

    The teacher sees the split on its own grid (its run's max_video_len, vocabulary and query limits); its
    outputs are unified onto the student grid of the data.yaml (min(T, max_video_len) clips).

    With `calibrate`, the teacher's own temperature (span, 2D map) or sigma (proposals, regression) is
    fitted on the validation queries its run held out (`emtm.distill.calibrate`) unless it is given
    here; the fit is recorded in the cache's metadata. Otherwise T = 1 and sigma = 0.05 by default.
    """
    from emtm.device import resolve_device

    run_dirs = [run_dirs] if isinstance(run_dirs, str | os.PathLike) else list(run_dirs)
    torch_device = resolve_device(device)
    runs = [load_run(run_dir, device=torch_device) for run_dir in run_dirs]
    data = read_split(data_yaml, split)
    folds = _check_fold_set(runs, split)
    if folds:
        _check_trained_on(runs, data)
    form = runs[0].model.output_form
    options = {"temperature": temperature, "sigma_frac": sigma_frac, "map_reduce": map_reduce}
    calibration = None
    if calibrate and options[parameter_of(form)] is None:
        chunks = _held_out_chunks(runs[0], data_yaml, torch_device, batch_size, progress)
        calibration = fit_calibration(form, chunks, map_reduce)
        options[calibration.parameter] = calibration.value
    options = unify_options(options)
    source = " ".join(str(Path(r).resolve()) for r in run_dirs)
    meta = data.meta(runs[0].cfg.model, form, source, options)
    meta.folds = folds
    meta.calibration = calibration.to_dict() if calibration else None
    meta.holdout_seed = None if folds else runs[0].cfg.holdout_seed  # out-of-fold entries: all held out

    def entries() -> Iterator[tuple[str, np.ndarray]]:
        for run in runs:
            samples = data.samples
            if folds:
                samples = [s for s, inside in zip(samples, in_fold(samples, run.cfg.fold)) if inside]
            yield from _run_entries(run, data, samples, options, torch_device, batch_size, progress)

    default = Path(run_dirs[0]) / f"teacher_{split}.h5"
    return write_cache(default if out is None else out, meta, entries())


def _check_fold_set(runs: list[LoadedRun], split: str) -> int:
    """k when `runs` are the k runs of one out-of-fold set (for the train split), 0 for one ordinary run."""
    folds = [run.cfg.fold for run in runs]
    if len(runs) == 1 and (folds[0] is None or split != "train"):
        return 0
    names = ", ".join(
        f"{run.run_dir} ({'no fold' if f is None else f'fold {f[0]}/{f[1]}'})" for run, f in zip(runs, folds)
    )
    if split != "train":
        raise ConfigError(
            f"several runs are exported together only as the out-of-fold cache of the train split, not "
            f"{split!r}; export one run on {split!r}: {names}"
        )
    k = folds[0][1] if folds[0] is not None else 0
    if (
        any(f is None for f in folds)
        or sorted(f[0] for f in folds) != list(range(k))
        or {f[1] for f in folds} != {k}
    ):
        raise ConfigError(
            f"an out-of-fold cache needs the runs of folds 0/k to k-1/k, each once (`emtm train --fold "
            f"i/k`); got {names}"
        )
    if len({(run.cfg.model, run.model.output_form) for run in runs}) > 1:
        raise ConfigError(f"the runs of an out-of-fold cache must train the same teacher; got {names}")
    return k


def _check_trained_on(runs: list[LoadedRun], data: Split) -> None:
    """Fold runs are out-of-fold only for the train annotations they were trained on."""
    sha = annotation_hash(data.annotation_file)
    for run in runs:
        try:
            trained_on = load_data_config(run.cfg.data).split_path("train")
        except EmtmError:  # its data.yaml has moved: nothing to compare
            continue
        if trained_on.exists() and annotation_hash(trained_on) != sha:
            raise ConfigError(
                f"{run.run_dir} was trained on {trained_on}, not on {data.annotation_file}: its fold is "
                f"not held out of these train queries; train the fold runs on {data.data_yaml}"
            )


def _teacher_dataset(run: LoadedRun, data: Split, samples: list[Sample]) -> GroundingDataset:
    """`samples` of `data` as the run's teacher sees them: its own grid, vocabulary and query limits."""
    if data.store.dim != run.spec.video_dim:
        raise DataError(
            f"teacher {run.run_dir} was trained on {run.spec.video_dim}-dim features, but the features of "
            f"{data.data_yaml} are {data.store.dim}-dim",
            data.store.path,
        )
    teacher_cfg = data.cfg.model_copy(
        update={
            "max_video_len": run.spec.max_video_len,
            "max_query_len": run.spec.max_query_len,
            "max_word_chars": run.spec.max_word_chars,
        }
    )
    return GroundingDataset(samples, data.store, run.vocab, teacher_cfg)


def _run_entries(
    run: LoadedRun,
    data: Split,
    samples: list[Sample],
    options: dict[str, Any],
    device: torch.device,
    batch_size: int,
    progress: bool,
) -> Iterator[tuple[str, np.ndarray]]:
    """One run's unified outputs on `samples` of `data`, on its own grid and vocabulary."""
    dataset = _teacher_dataset(run, data, samples)
    same_grid = run.spec.max_video_len == data.cfg.max_video_len
    student_lengths = None if same_grid else data.grid_lengths(samples)
    for batch_samples, native, src_mask, dst_mask in _teacher_batches(
        run.model, dataset, student_lengths, device, batch_size, progress
    ):
        with torch.inference_mode():
            start, end = unify(run.model.output_form, native, dst_mask, src_mask=src_mask, **options)
        yield from zip((s.sample_id for s in batch_samples), batch_rows(start, end, dst_mask))


def _teacher_batches(
    model: GroundingModel,
    dataset: GroundingDataset,
    student_lengths: dict[str, int] | None,
    device: torch.device,
    batch_size: int,
    progress: bool,
) -> Iterator[tuple[list[Sample], dict[str, Tensor], Tensor, Tensor]]:
    """(samples, native outputs, teacher grid mask, student grid mask) per batch: the teacher's forward
    pass in eval mode. student_lengths None means the student grid is the teacher's (the video_mask)."""
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=partial(collate, max_chars=dataset.cfg.max_word_chars),
    )
    for batch in tqdm(loader, desc="teacher outputs", disable=not progress, leave=False):
        samples = [dataset.samples[i] for i in batch["index"].tolist()]
        with torch.inference_mode():
            batch = to_device(batch, device)
            native = model.teacher_outputs(model(batch), batch)
            src_mask = batch["video_mask"]
            if student_lengths is None:
                dst_mask = src_mask
            else:
                dst_mask = lengths_mask([student_lengths[s.video_id] for s in samples]).to(device)
        yield samples, native, src_mask, dst_mask


def _held_out_chunks(
    run: LoadedRun, data_yaml: PathLike, device: torch.device, batch_size: int, progress: bool
) -> list[HeldOutChunk]:
    """The run's teacher outputs on the validation queries it held out (the data.yaml's val split, or
    the seeded hold-out of its train split), with their ground truth on the student grid."""
    cfg = load_data_config(data_yaml)
    prepared = prepare(cfg, run.cfg.holdout_seed, names=("train", "val"), fold=run.cfg.fold)
    samples = prepared.splits["val"].samples
    if not samples:
        raise DataError("calibration needs held-out queries, and the validation split is empty", data_yaml)
    val = Split(Path(data_yaml), cfg, "val", samples, prepared.store, cfg.split_path("train"))
    dataset = _teacher_dataset(run, val, samples)
    lengths = val.grid_lengths(samples)
    chunks = []
    for batch_samples, native, src_mask, dst_mask in _teacher_batches(
        run.model, dataset, lengths, device, batch_size, progress
    ):
        cpu = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in native.items()}
        start, end = truth_indices(batch_samples, [lengths[s.video_id] for s in batch_samples])
        chunks.append(HeldOutChunk(cpu, src_mask.cpu(), dst_mask.cpu(), start, end))
    return chunks
