"""Importing the outputs of models trained in other codebases (`import_outputs`, `emtm teachers import`):
a file of native outputs (layouts in `emtm.distill.cache`) read, optionally calibrated on held-out
queries, unified onto the student grid and written as a teacher cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emtm.config import load_data_config
from emtm.data.dataset import prepare
from emtm.distill.cache.files import Records, read_records
from emtm.distill.cache.layout import IMPORT_FORMATS, PathLike
from emtm.distill.cache.write import Split, batch_rows, lengths_mask, read_split, unify_options, write_cache
from emtm.distill.calibrate import HeldOutChunk, fit_calibration, parameter_of, truth_indices
from emtm.distill.unify import unify
from emtm.errors import ConfigError, DataError

_CHUNK = 256  # imported samples unified per batch


def import_outputs(
    fmt: str,
    in_path: PathLike,
    data_yaml: PathLike,
    split: str,
    out: PathLike,
    teacher_name: str | None = None,
    temperature: float | None = None,
    sigma_frac: float | None = None,
    map_reduce: str = "sum",
    allow_missing: bool = False,
    calibrate_on: PathLike | None = None,
    calibrate_split: str = "val",
) -> Path:
    """Cache a file of native outputs (`fmt` in IMPORT_FORMATS) for `split`; returns `out`.

    teacher_name defaults to the file's stem. With allow_missing, samples absent from the file are simply
    not cached (`sample_id in cache` is False for them). With `calibrate_on`, a file of the same teacher's
    outputs on held-out queries (those of `calibrate_split`: the data.yaml's val split, or its seeded
    hold-out), the temperature or sigma not given here is fitted on them (`emtm.distill.calibrate`).
    """
    if fmt not in IMPORT_FORMATS:
        raise ConfigError(
            f"unknown teacher output format {fmt!r}; expected one of {', '.join(IMPORT_FORMATS)}"
        )
    in_path = _checked_output_file(fmt, in_path)
    data = read_split(data_yaml, split)
    by_id = {s.sample_id: s for s in data.samples}
    where = f"split {split!r} of {data_yaml}"
    records = read_records(fmt, in_path, by_id, where)
    missing = [s.sample_id for s in data.samples if s.sample_id not in records]
    if missing and not allow_missing:
        raise DataError(
            f"{len(missing)} of {len(data.samples)} samples of {where} are not in this file, e.g. "
            f"{missing[:5]}; add them, or pass allow_missing=True to cache only those present",
            in_path,
        )
    options = {"temperature": temperature, "sigma_frac": sigma_frac, "map_reduce": map_reduce}
    calibration = None
    if calibrate_on is not None and options[parameter_of(fmt)] is None:
        chunks = _imported_held_out(fmt, _checked_output_file(fmt, calibrate_on), data_yaml, calibrate_split)
        calibration = fit_calibration(fmt, chunks, map_reduce, calibrate_split)
        options[calibration.parameter] = calibration.value
    options = unify_options(options)
    meta = data.meta(teacher_name or in_path.stem, fmt, in_path.resolve(), options)
    meta.calibration = calibration.to_dict() if calibration else None
    video_len = data.grid_lengths([by_id[sid] for sid in records])
    lengths = {sid: video_len[by_id[sid].video_id] for sid in records}
    return write_cache(out, meta, _imported_entries(fmt, records, lengths, options))


def _checked_output_file(fmt: str, path: PathLike) -> Path:
    """`path` when it is a file with the extension `fmt` is read from, else a DataError saying which."""
    path = Path(path)
    suffix = ".npz" if fmt in ("span", "2dmap") else ".jsonl"
    if not path.is_file():
        raise DataError(f"teacher output file does not exist (format {fmt!r} expects a {suffix} file)", path)
    if path.suffix.lower() != suffix:
        raise DataError(f"format {fmt!r} expects a {suffix} file (layouts: emtm.distill.cache)", path)
    return path


def _imported_held_out(fmt: str, path: Path, data_yaml: PathLike, split: str) -> list[HeldOutChunk]:
    """Imported outputs on held-out queries (every query of `split` found in the file), in chunks with
    their ground truth on the student grid, for calibration."""
    cfg = load_data_config(data_yaml)
    names = ("train", "val") if split == "val" else (split,)
    prepared = prepare(cfg, seed=0, names=names)
    if split not in prepared.splits:
        raise DataError(f"split {split!r} not found in {data_yaml} (it has {', '.join(cfg.splits)})")
    samples = prepared.splits[split].samples
    by_id = {s.sample_id: s for s in samples}
    records = read_records(fmt, path, by_id, f"held-out split {split!r} of {data_yaml}")
    if not records:
        raise DataError(f"no query of split {split!r} of {data_yaml} is in this file", path)
    held = Split(Path(data_yaml), cfg, split, samples, prepared.store, cfg.split_path("train"))
    video_len = held.grid_lengths([by_id[sid] for sid in records])
    ids, chunks = list(records), []
    for begin in range(0, len(ids), _CHUNK):
        chunk = [by_id[sid] for sid in ids[begin : begin + _CHUNK]]
        lengths = [video_len[s.video_id] for s in chunk]
        native, src_mask = _native_batch(fmt, [records[s.sample_id] for s in chunk])
        start, end = truth_indices(chunk, lengths)
        chunks.append(HeldOutChunk(native, src_mask, lengths_mask(lengths), start, end))
    return chunks


def _imported_entries(
    fmt: str, records: Records, lengths: dict[str, int], options: dict[str, Any]
) -> Iterator[tuple[str, np.ndarray]]:
    """Unify the records chunk by chunk, in file order."""
    ids = list(records)
    for begin in range(0, len(ids), _CHUNK):
        chunk = ids[begin : begin + _CHUNK]
        dst_mask = lengths_mask([lengths[sid] for sid in chunk])
        native, src_mask = _native_batch(fmt, [records[sid] for sid in chunk])
        start, end = unify(fmt, native, dst_mask, src_mask=src_mask, **options)
        yield from zip(chunk, batch_rows(start, end, dst_mask))


def _native_batch(fmt: str, rows: list[dict[str, np.ndarray]]) -> tuple[dict[str, Tensor], Tensor | None]:
    """Pad per-sample native outputs into the batch tensors `unify` takes (and the span's src_mask)."""
    if fmt == "span":
        src_mask = lengths_mask([len(r["start"]) for r in rows])
        start, end = torch.zeros(src_mask.shape), torch.zeros(src_mask.shape)
        for i, r in enumerate(rows):
            start[i, : len(r["start"])] = torch.from_numpy(r["start"])
            end[i, : len(r["end"])] = torch.from_numpy(r["end"])
        return {"start_logits": start, "end_logits": end}, src_mask
    if fmt == "2dmap":
        return {
            "map_scores": torch.from_numpy(np.stack([r["scores"] for r in rows])),
            "map_mask": torch.from_numpy(np.stack([r["mask"] for r in rows])),
            "map_is_logits": torch.tensor([bool(r["is_logits"]) for r in rows]),
        }, None
    if fmt == "proposals":
        valid = lengths_mask([len(r["scores"]) for r in rows])
        windows, scores = torch.zeros(*valid.shape, 2), torch.zeros(valid.shape)
        for i, r in enumerate(rows):
            windows[i, : len(r["scores"])] = torch.from_numpy(r["windows"])
            scores[i, : len(r["scores"])] = torch.from_numpy(r["scores"])
        return {"windows": windows, "scores": scores, "valid": valid}, None
    return {"window": torch.from_numpy(np.stack([r["window"] for r in rows]))}, None
