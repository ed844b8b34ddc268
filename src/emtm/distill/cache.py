"""Teacher cache: each teacher's outputs computed once, stored on the student grid, read lazily.

A cache holds, for every query (sample) of one split, the teacher's start and end distributions after
`emtm.distill.unify`, on the clip grid the student sees for that sample: n = min(T, max_video_len) clips,
where T is the video's feature length (exactly `len(resample_features(feats, max_video_len))`, i.e. the
valid part of the batch's video_mask). Entries are keyed by sample_id, never by position in a list, so a
cache survives reordering, filtering and held-out validation videos (a "train" cache covers the whole
train file).

Only the unified distributions and metadata are stored, not the teachers' raw native outputs (2D maps
alone would be N x N per query): the file stays small and the distillation loop reads two short rows per
sample. The unify options (temperature, sigma_frac, map_reduce) are therefore baked in and recorded in the
metadata; changing them means rebuilding the cache.

HDF5 layout (version `CACHE_VERSION`)::

    attrs["meta"]        CacheMeta as a JSON string
    samples/<key>        float32 (2, n): row 0 the start, row 1 the end distribution over the n clips;
                         attrs["n"] = n. <key> is the sample_id percent-encoded (urllib.parse.quote with
                         no safe characters: "/" -> "%2F", "%" -> "%25", a leading "." -> "%2E"), so any
                         id is a valid HDF5 name; ids like "S0001A_2" are stored unchanged.

The file is written to a temporary path and renamed, so it is complete or absent, never half-written.

Out-of-fold caches (`export_teacher` with k runs trained with `emtm train --fold i/k`, i = 0..k-1): each
run gives its outputs on the train queries of the one fold it did not see, so every entry is the
teacher's output on a query it was not trained on, as on new queries (meta.folds = k; 0 otherwise).

Importing outputs of models trained in other codebases (`import_outputs`). No format is ever unpickled
(np.load(allow_pickle=False)): an .npz with object arrays is refused. sample_ids must be those of the
split's annotation file; unknown ids are an error naming the file, the row or line and the id, and every
sample of the split must be present unless allow_missing=True.

* "span" (.npz): "sample_ids" (S,) str or int; "start_logits", "end_logits" (S, Lt) float, padded rows
  on the teacher's own grid; optional "lengths" (S,) int, each row's valid length (default Lt). Values
  past a row's length are ignored. Each row is softmaxed (/ temperature) on its own grid and resampled onto
  the student grid with clip starts/ends aligned (see unify's grid convention).
* "2dmap" (.npz): "sample_ids" (S,); "scores" (S, N, N), cell (i, j) = the moment [i/N, (j+1)/N] of the
  video; optional "mask" (S, N, N) or (N, N) bool, the valid cells (default: the upper triangle j >= i);
  optional "is_logits" bool, scalar or (S,) (default False: scores are probabilities in [0, 1]).
* "proposals" (.jsonl): one JSON object per line,
  {"sample_id": "...", "unit": "seconds" | "fraction", "windows": [[s, e], ...], "scores": [...]}; the
  scores (>= 0) weight the windows. Moment-DETR's [[s, e, score], ...] is also accepted as "windows"
  without "scores". "unit" is required: seconds are divided by the sample's annotated duration.
* "regression" (.jsonl): {"sample_id": "...", "unit": "seconds" | "fraction", "window": [s, e]}.

Windows are clipped to the video; a start after its end is an error.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emtm.config import DataConfig, load_data_config
from emtm.data.annotations import annotation_hash, json_lines, short_repr
from emtm.data.dataset import GroundingDataset, collate, in_fold, prepare
from emtm.data.features import NPY_READ_ERRORS, FeatureStore
from emtm.data.records import Sample
from emtm.distill.calibrate import DEFAULTS, HeldOutChunk, fit_calibration, parameter_of, truth_indices
from emtm.distill.unify import unify
from emtm.engine.checkpoint import LoadedRun, load_run
from emtm.engine.evaluate import to_device
from emtm.errors import ConfigError, DataError, EmtmError
from emtm.io import atomic_path
from emtm.models.base import GroundingModel

CACHE_VERSION = 1
IMPORT_FORMATS = ("span", "2dmap", "proposals", "regression")
UNITS = ("seconds", "fraction")
_CHUNK = 256  # imported samples unified per batch

PathLike = str | os.PathLike[str]


@dataclass
class CacheMeta:
    """What a cache was built from and for; stored as JSON in the file's "meta" attribute."""

    teacher: str  # the run's model name, or the name given to imported outputs
    output_form: str  # the teacher's native form (one of IMPORT_FORMATS)
    source: str  # the run directory, or the imported file
    dataset: str  # the data.yaml
    split: str
    annotation_file: str
    annotation_sha256: str
    rule: str  # the unify rule applied (= output_form)
    temperature: float
    sigma_frac: float
    map_reduce: str
    max_video_len: int  # of the student grid
    created: str  # ISO 8601, UTC
    version: int = CACHE_VERSION
    folds: int = 0  # k of an out-of-fold cache (every entry from the run that did not see it), else 0
    # The fitted calibration (emtm.distill.calibrate.Calibration as a dict: parameter, value, held-out
    # loss at it and at the default, queries, split), or None when the options were given or defaulted.
    calibration: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Reading


class TeacherCache:
    """Lazy reader of a cache file: `sample_id in cache`, `cache.get(sample_id)` -> float32 (2, n).

    The HDF5 file is opened on first use in each process (reopened after a fork, dropped when pickled),
    so a cache can be shared with DataLoader workers.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError("teacher cache does not exist; build it with `emtm teachers export`", self.path)
        self._handle: Any = None
        self._pid: int | None = None
        self.meta = self._read_meta()
        self.close()  # no handle survives __init__, so nothing is shared across a fork

    def _file(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            import h5py

            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"cannot open the teacher cache as HDF5 ({exc})", self.path) from None
            self._pid = os.getpid()
        return self._handle

    def _read_meta(self) -> CacheMeta:
        f = self._file()
        if "meta" not in f.attrs or "samples" not in f:
            raise DataError("not an emtm teacher cache (no 'meta' attribute or 'samples' group)", self.path)
        try:
            raw = json.loads(f.attrs["meta"])
        except (TypeError, json.JSONDecodeError) as exc:
            raise DataError(f"teacher cache metadata is not valid JSON ({exc})", self.path) from None
        required = [f.name for f in fields(CacheMeta) if f.default is MISSING]
        missing = [name for name in required if name not in raw]
        if missing and raw.get("version") == CACHE_VERSION:
            raise DataError(f"teacher cache metadata lacks {missing}; rebuild the cache", self.path)
        present = [f.name for f in fields(CacheMeta) if f.default is MISSING or f.name in raw]
        return CacheMeta(**{name: raw.get(name) for name in present})  # other versions: check_compatible

    def __contains__(self, sample_id: object) -> bool:
        return isinstance(sample_id, str) and bool(sample_id) and _key(sample_id) in self._file()["samples"]

    def __len__(self) -> int:
        return len(self._file()["samples"])

    def sample_ids(self) -> list[str]:
        return [unquote(key) for key in self._file()["samples"]]

    def get(self, sample_id: str) -> np.ndarray:
        """The (2, n) float32 start/end distributions of one sample."""
        group = self._file()["samples"]
        key = _key(sample_id)
        if key not in group:
            raise DataError(
                f"no teacher outputs for sample {sample_id!r} (teacher {self.meta.teacher!r}, split "
                f"{self.meta.split!r}); rebuild the cache for this data",
                self.path,
            )
        return np.asarray(group[key][()], dtype=np.float32)

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
        self._pid = None

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def __repr__(self) -> str:
        return f"TeacherCache({str(self.path)!r}, teacher={self.meta.teacher!r}, split={self.meta.split!r})"


def check_compatible(
    cache: TeacherCache, data_yaml: PathLike, split: str, max_video_len: int | None = None
) -> None:
    """Raise DataError unless `cache` was built for this split's annotations and student grid.

    Compared: the cache format version, the split name, the annotation file's sha256 (its content, not
    its path) and max_video_len (default: the data.yaml's).
    """
    meta = cache.meta
    hint = _rebuild_hint(meta, data_yaml, split, cache.path)
    if meta.version != CACHE_VERSION:
        raise DataError(
            f"teacher cache format version {meta.version!r}, but this emtm reads version {CACHE_VERSION}; "
            f"{hint}",
            cache.path,
        )
    data_cfg = load_data_config(data_yaml)
    annotation_file = data_cfg.split_path(split)
    sha = annotation_hash(annotation_file)
    wanted_len = data_cfg.max_video_len if max_video_len is None else max_video_len
    problems = []
    if meta.split != split:
        problems.append(f"split {meta.split!r}, not {split!r}")
    if meta.annotation_sha256 != sha:
        changed = "which has changed since" if meta.annotation_file == str(annotation_file) else "not"
        problems.append(
            f"annotation file {meta.annotation_file} (sha256 {meta.annotation_sha256[:12]}), "
            f"{changed} {annotation_file} (sha256 {sha[:12]})"
        )
    if meta.max_video_len != wanted_len:
        problems.append(f"max_video_len {meta.max_video_len}, not {wanted_len}")
    if problems:
        raise DataError(
            f"teacher cache of {meta.teacher!r} was built for {'; '.join(problems)} "
            f"(asked: {data_yaml}, split {split!r}); {hint}",
            cache.path,
        )


def _rebuild_hint(meta: CacheMeta, data_yaml: PathLike, split: str, path: Path) -> str:
    if meta.source and Path(str(meta.source)).suffix in (".npz", ".jsonl"):
        return (
            f"rebuild it with `emtm teachers import --format {meta.output_form} --in {meta.source} "
            f"--data {data_yaml} --split {split} --out {path}`"
        )
    return (
        f"rebuild it with `emtm teachers export --run {meta.source} --data {data_yaml} --split {split} "
        f"--out {path}`"
    )


# --------------------------------------------------------------------------------------------
# Writing: shared by export and import


def _key(sample_id: str) -> str:
    """A sample_id as an HDF5 name: percent-encoded, never "", ".", ".." or containing "/"."""
    if not sample_id:
        raise DataError("empty sample_id cannot be cached")
    key = quote(sample_id, safe="")
    return "%2E" + key[1:] if key.startswith(".") else key


def _write_cache(out: PathLike, meta: CacheMeta, entries: Iterable[tuple[str, np.ndarray]]) -> Path:
    """Write (sample_id, (2, n)) entries atomically; an exception leaves no file at `out`."""
    import h5py

    out = Path(out)
    seen: set[str] = set()
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["meta"] = json.dumps(asdict(meta))
        group = f.create_group("samples")
        for sample_id, dist in entries:
            if sample_id in seen:
                raise DataError(f"sample_id {sample_id!r} occurs twice", meta.source)
            seen.add(sample_id)
            dataset = group.create_dataset(_key(sample_id), data=np.asarray(dist, dtype=np.float32))
            dataset.attrs["n"] = int(dist.shape[1])
    return out


def _rows(start: Tensor, end: Tensor, dst_mask: Tensor) -> list[np.ndarray]:
    """Per sample of a batch, its (2, n) distributions over the n valid clips of dst_mask."""
    both = torch.stack([start, end], 1).float().cpu().numpy()
    return [both[i, :, :n] for i, n in enumerate(dst_mask.sum(1).tolist())]


def _lengths_mask(lengths: list[int]) -> Tensor:
    return torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _check_options(temperature: float, sigma_frac: float, map_reduce: str) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if not sigma_frac > 0:
        raise ConfigError(f"sigma_frac must be > 0, got {sigma_frac}")
    if map_reduce not in ("sum", "max"):
        raise ConfigError(f"map_reduce must be 'sum' or 'max', got {map_reduce!r}")


@dataclass
class _Split:
    """One split of a data.yaml: its samples, feature store and annotation file."""

    data_yaml: Path
    cfg: DataConfig
    name: str
    samples: list[Sample]
    store: FeatureStore
    annotation_file: Path

    def grid_lengths(self, samples: list[Sample]) -> dict[str, int]:
        """{video_id: n} of the student grid, n = min(T, max_video_len); reads each video once."""
        videos = dict.fromkeys(s.video_id for s in samples)
        return {v: min(int(self.store.load(v).shape[0]), self.cfg.max_video_len) for v in videos}

    def meta(self, teacher: str, form: str, source: PathLike, options: dict[str, Any]) -> CacheMeta:
        return CacheMeta(
            teacher=teacher,
            output_form=form,
            source=str(source),  # resolved path(s), space-separated
            dataset=str(self.data_yaml.resolve()),
            split=self.name,
            annotation_file=str(self.annotation_file),
            annotation_sha256=annotation_hash(self.annotation_file),
            rule=form,
            max_video_len=self.cfg.max_video_len,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            **options,
        )


def _read_split(data_yaml: PathLike, split: str) -> _Split:
    """A split named in data.yaml (all of its file: no validation hold-out is removed)."""
    cfg = load_data_config(data_yaml)
    annotation_file = cfg.split_path(split)
    prepared = prepare(cfg, seed=0, names=(split,))
    return _Split(
        Path(data_yaml), cfg, split, prepared.splits[split].samples, prepared.store, annotation_file
    )


# --------------------------------------------------------------------------------------------
# Export: run a trained emtm teacher


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
    data = _read_split(data_yaml, split)
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
    options = {k: DEFAULTS.get(k) if v is None else v for k, v in options.items()}
    _check_options(**options)
    source = " ".join(str(Path(r).resolve()) for r in run_dirs)
    meta = data.meta(runs[0].cfg.model, form, source, options)
    meta.folds = folds
    meta.calibration = calibration.to_dict() if calibration else None

    def entries() -> Iterator[tuple[str, np.ndarray]]:
        for run in runs:
            samples = data.samples
            if folds:
                samples = [s for s, inside in zip(samples, in_fold(samples, run.cfg.fold)) if inside]
            yield from _run_entries(run, data, samples, options, torch_device, batch_size, progress)

    default = Path(run_dirs[0]) / f"teacher_{split}.h5"
    return _write_cache(default if out is None else out, meta, entries())


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


def _check_trained_on(runs: list[LoadedRun], data: _Split) -> None:
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


def _teacher_dataset(run: LoadedRun, data: _Split, samples: list[Sample]) -> GroundingDataset:
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
    data: _Split,
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
        yield from zip((s.sample_id for s in batch_samples), _rows(start, end, dst_mask))


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
                dst_mask = _lengths_mask([student_lengths[s.video_id] for s in samples]).to(device)
        yield samples, native, src_mask, dst_mask


def _held_out_chunks(
    run: LoadedRun, data_yaml: PathLike, device: torch.device, batch_size: int, progress: bool
) -> list[HeldOutChunk]:
    """The run's teacher outputs on the validation queries it held out (the data.yaml's val split, or
    the seeded hold-out of its train split), with their ground truth on the student grid."""
    cfg = load_data_config(data_yaml)
    prepared = prepare(cfg, run.cfg.run.seed, names=("train", "val"), fold=run.cfg.fold)
    samples = prepared.splits["val"].samples
    if not samples:
        raise DataError("calibration needs held-out queries, and the validation split is empty", data_yaml)
    val = _Split(Path(data_yaml), cfg, "val", samples, prepared.store, cfg.split_path("train"))
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


# --------------------------------------------------------------------------------------------
# Import: outputs of models trained elsewhere (layouts in the module docstring)


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
    data = _read_split(data_yaml, split)
    by_id = {s.sample_id: s for s in data.samples}
    where = f"split {split!r} of {data_yaml}"
    records = _READERS.get(fmt, _read_regression)(in_path, by_id, where)
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
    options = {k: DEFAULTS.get(k) if v is None else v for k, v in options.items()}
    _check_options(**options)
    meta = data.meta(teacher_name or in_path.stem, fmt, in_path.resolve(), options)
    meta.calibration = calibration.to_dict() if calibration else None
    video_len = data.grid_lengths([by_id[sid] for sid in records])
    lengths = {sid: video_len[by_id[sid].video_id] for sid in records}
    return _write_cache(out, meta, _imported_entries(fmt, records, lengths, options))


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
    records = _READERS.get(fmt, _read_regression)(path, by_id, f"held-out split {split!r} of {data_yaml}")
    if not records:
        raise DataError(f"no query of split {split!r} of {data_yaml} is in this file", path)
    held = _Split(Path(data_yaml), cfg, split, samples, prepared.store, cfg.split_path("train"))
    video_len = held.grid_lengths([by_id[sid] for sid in records])
    ids, chunks = list(records), []
    for begin in range(0, len(ids), _CHUNK):
        chunk = [by_id[sid] for sid in ids[begin : begin + _CHUNK]]
        lengths = [video_len[s.video_id] for s in chunk]
        native, src_mask = _native_batch(fmt, [records[s.sample_id] for s in chunk])
        start, end = truth_indices(chunk, lengths)
        chunks.append(HeldOutChunk(native, src_mask, _lengths_mask(lengths), start, end))
    return chunks


def _imported_entries(
    fmt: str, records: dict[str, dict[str, np.ndarray]], lengths: dict[str, int], options: dict[str, Any]
) -> Iterator[tuple[str, np.ndarray]]:
    """Unify the records chunk by chunk, in file order."""
    ids = list(records)
    for begin in range(0, len(ids), _CHUNK):
        chunk = ids[begin : begin + _CHUNK]
        dst_mask = _lengths_mask([lengths[sid] for sid in chunk])
        native, src_mask = _native_batch(fmt, [records[sid] for sid in chunk])
        start, end = unify(fmt, native, dst_mask, src_mask=src_mask, **options)
        yield from zip(chunk, _rows(start, end, dst_mask))


def _native_batch(fmt: str, rows: list[dict[str, np.ndarray]]) -> tuple[dict[str, Tensor], Tensor | None]:
    """Pad per-sample native outputs into the batch tensors `unify` takes (and the span's src_mask)."""
    if fmt == "span":
        src_mask = _lengths_mask([len(r["start"]) for r in rows])
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
        valid = _lengths_mask([len(r["scores"]) for r in rows])
        windows, scores = torch.zeros(*valid.shape, 2), torch.zeros(valid.shape)
        for i, r in enumerate(rows):
            windows[i, : len(r["scores"])] = torch.from_numpy(r["windows"])
            scores[i, : len(r["scores"])] = torch.from_numpy(r["scores"])
        return {"windows": windows, "scores": scores, "valid": valid}, None
    return {"window": torch.from_numpy(np.stack([r["window"] for r in rows]))}, None


# .npz formats


# What reading a damaged .npz raises (seen when fuzzing truncated and bit-flipped archives).
_NPZ_ERRORS = (*NPY_READ_ERRORS, zipfile.BadZipFile, zlib.error, NotImplementedError, KeyError, RuntimeError)


def _load_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """All arrays of an .npz, never unpickling; the required keys must be there."""
    try:
        npz = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:
        raise DataError(
            f"not a readable .npz archive ({exc}); it may be truncated or corrupt", path
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError("expected an .npz archive of named arrays (np.savez), not a single .npy array", path)
    with npz:
        missing = [key for key in required if key not in npz.files]
        if missing:
            raise DataError(f"missing array(s) {missing}; the archive has {npz.files}", path)
        arrays = {}
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                if "pickle" not in str(exc).lower():
                    raise DataError(f"array {key!r} cannot be read ({exc})", path) from None
                raise DataError(
                    f"array {key!r} is an object array, which would need pickle to load, and emtm never "
                    "unpickles; save it as a plain array (e.g. np.asarray(sample_ids, dtype=str))",
                    path,
                ) from None
            except _NPZ_ERRORS as exc:
                raise DataError(
                    f"array {key!r} cannot be read ({exc}); the archive may be truncated or corrupt", path
                ) from None
    return arrays


def _npz_ids(arrays: dict[str, np.ndarray], path: Path, by_id: dict[str, Sample], where: str) -> list[str]:
    """The "sample_ids" array as str, each one known to the split and unique."""
    raw = arrays["sample_ids"]
    if raw.ndim != 1 or raw.dtype.kind not in "USiu":
        raise DataError(f"'sample_ids' must be a 1-D str or int array, got {raw.dtype} {raw.shape}", path)
    try:
        ids = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw.tolist()]
    except UnicodeDecodeError as exc:
        raise DataError(f"'sample_ids' holds bytes that are not UTF-8 ({exc.reason})", path) from None
    first_row: dict[str, int] = {}
    for row, sid in enumerate(ids):
        if sid not in by_id:
            raise DataError(f"row {row}: sample_id {short_repr(sid)} is not in {where}", path)
        if sid in first_row:
            raise DataError(f"row {row}: sample_id {sid!r} already on row {first_row[sid]}", path)
        first_row[sid] = row
    return ids


def _check_rows(name: str, array: np.ndarray, n_rows: int, ndim: int, path: Path) -> np.ndarray:
    if array.ndim != ndim or array.shape[0] != n_rows or array.dtype.kind not in "fiub":
        raise DataError(
            f"{name!r} must be a numeric {ndim}-D array with one row per sample_id ({n_rows}), "
            f"got {array.dtype} {array.shape}",
            path,
        )
    return array


def _bad_values(values: np.ndarray) -> bool:
    return bool(np.isnan(values).any() or np.isposinf(values).any())


def _read_span(path: Path, by_id: dict[str, Sample], where: str) -> dict[str, dict[str, np.ndarray]]:
    arrays = _load_npz(path, ("sample_ids", "start_logits", "end_logits"))
    ids = _npz_ids(arrays, path, by_id, where)
    start = _check_rows("start_logits", arrays["start_logits"], len(ids), 2, path).astype(np.float32)
    end = _check_rows("end_logits", arrays["end_logits"], len(ids), 2, path).astype(np.float32)
    if start.shape != end.shape:
        raise DataError(f"'start_logits' {start.shape} and 'end_logits' {end.shape} differ in shape", path)
    width = start.shape[1]
    lengths = arrays.get("lengths", np.full(len(ids), width))
    lengths = _check_rows("lengths", lengths, len(ids), 1, path)
    records = {}
    for row, (sid, n) in enumerate(zip(ids, lengths.tolist())):
        if not (math.isfinite(n) and n == int(n) and 1 <= n <= width):
            raise DataError(f"row {row} ({sid!r}): length {n} is not in [1, {width}]", path)
        s, e = start[row, : int(n)], end[row, : int(n)]
        if _bad_values(s) or _bad_values(e):
            raise DataError(f"row {row} ({sid!r}): logits hold NaN or +inf", path)
        records[sid] = {"start": s, "end": e}
    return records


def _read_map(path: Path, by_id: dict[str, Sample], where: str) -> dict[str, dict[str, np.ndarray]]:
    arrays = _load_npz(path, ("sample_ids", "scores"))
    ids = _npz_ids(arrays, path, by_id, where)
    scores = _check_rows("scores", arrays["scores"], len(ids), 3, path).astype(np.float32)
    n = scores.shape[1]
    if scores.shape[2] != n:
        raise DataError(f"'scores' must be (S, N, N) square maps, got {scores.shape}", path)
    mask = arrays.get("mask", np.triu(np.ones((n, n), dtype=bool)))
    if mask.shape == (n, n):
        mask = np.broadcast_to(mask, scores.shape)
    if mask.shape != scores.shape or mask.dtype.kind not in "biu":
        raise DataError(
            f"'mask' must be bool (N, N) or (S, N, N) like 'scores', got {mask.dtype} {mask.shape}", path
        )
    is_logits = np.asarray(arrays.get("is_logits", False))
    if is_logits.dtype.kind not in "biu" or is_logits.shape not in ((), (len(ids),)):
        raise DataError(
            f"'is_logits' must be a bool scalar or (S,) array, got {is_logits.dtype} {is_logits.shape}", path
        )
    is_logits = np.broadcast_to(is_logits.astype(bool), (len(ids),))
    records = {}
    for row, sid in enumerate(ids):
        valid = scores[row][mask[row].astype(bool)]
        if valid.size == 0:
            raise DataError(f"row {row} ({sid!r}): the mask has no valid cell", path)
        if _bad_values(valid):
            raise DataError(f"row {row} ({sid!r}): scores hold NaN or +inf", path)
        if not is_logits[row] and (valid.min() < 0 or valid.max() > 1):
            raise DataError(
                f"row {row} ({sid!r}): scores outside [0, 1]; add is_logits=True if these are logits", path
            )
        records[sid] = {"scores": scores[row], "mask": mask[row].astype(bool), "is_logits": is_logits[row]}
    return records


# .jsonl formats


def _read_jsonl(
    path: Path, by_id: dict[str, Sample], where: str, keys: tuple[str, ...]
) -> Iterator[tuple[int, Sample, dict[str, Any]]]:
    """(line number, sample, record) per non-blank line; each sample_id known and unique."""
    first_line: dict[str, int] = {}
    for lineno, record in json_lines(path):
        for key in ("sample_id", "unit", *keys):
            if key not in record:
                raise DataError(f"missing key {key!r}", path, lineno)
        raw_id = record["sample_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, int | str):
            raise DataError(
                f"'sample_id' must be a string or an integer, got {short_repr(raw_id)}", path, lineno
            )
        sid = str(raw_id)
        if sid not in by_id:
            raise DataError(f"sample_id {short_repr(sid)} is not in {where}", path, lineno)
        if sid in first_line:
            raise DataError(f"sample_id {sid!r} already on line {first_line[sid]}", path, lineno)
        first_line[sid] = lineno
        if record["unit"] not in UNITS:
            raise DataError(f"'unit' must be one of {UNITS}, got {short_repr(record['unit'])}", path, lineno)
        yield lineno, by_id[sid], record


def _fraction_window(value: Any, unit: str, sample: Sample, what: str, path: Path, lineno: int) -> np.ndarray:
    """[s, e] (seconds or fractions) -> float32 fractions clipped to [0, 1]; s <= e required."""
    if not (isinstance(value, list) and len(value) == 2 and all(_is_finite(x) for x in value)):
        raise DataError(
            f"{what} must be [start, end] (two finite numbers), got {short_repr(value)}", path, lineno
        )
    s, e = (float(x) / (sample.duration if unit == "seconds" else 1.0) for x in value)
    if s > e:
        raise DataError(f"{what} {short_repr(value)} starts after it ends", path, lineno)
    return np.clip(np.array([s, e], dtype=np.float32), 0.0, 1.0)


def _is_finite(x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # a JSON integer past float range
        return False


def _read_proposals(path: Path, by_id: dict[str, Sample], where: str) -> dict[str, dict[str, np.ndarray]]:
    records = {}
    for lineno, sample, record in _read_jsonl(path, by_id, where, ("windows",)):
        windows = record["windows"]
        if not isinstance(windows, list) or not windows:
            raise DataError(
                f"'windows' must be a non-empty list of [start, end], got {short_repr(windows)}", path, lineno
            )
        if "scores" in record:
            scores, pairs = record["scores"], windows
            if not isinstance(scores, list) or len(scores) != len(windows):
                raise DataError(
                    f"'scores' must be a list of {len(windows)} numbers, one per window", path, lineno
                )
        elif all(isinstance(w, list) and len(w) == 3 for w in windows):  # Moment-DETR [s, e, score]
            scores, pairs = [w[2] for w in windows], [w[:2] for w in windows]
        else:
            raise DataError("missing 'scores' (or give windows as [start, end, score])", path, lineno)
        if not all(_is_finite(x) and x >= 0 for x in scores):
            raise DataError(f"'scores' must be finite numbers >= 0, got {short_repr(scores)}", path, lineno)
        records[sample.sample_id] = {
            "windows": np.stack(
                [
                    _fraction_window(w, record["unit"], sample, f"windows[{k}]", path, lineno)
                    for k, w in enumerate(pairs)
                ]
            ),
            "scores": np.asarray(scores, dtype=np.float32),
        }
    return records


def _read_regression(path: Path, by_id: dict[str, Sample], where: str) -> dict[str, dict[str, np.ndarray]]:
    return {
        sample.sample_id: {
            "window": _fraction_window(record["window"], record["unit"], sample, "'window'", path, lineno)
        }
        for lineno, sample, record in _read_jsonl(path, by_id, where, ("window",))
    }


_READERS = {"span": _read_span, "2dmap": _read_map, "proposals": _read_proposals}
