"""Prediction files in the Moment-DETR / Lighthouse layout: write them from a model, read any of them.

One JSON object per line (blank lines are skipped):

    {"qid": "S1500D_0", "vid": "S1500D", "query": "person looks at the sandwich.",
     "pred_relevant_windows": [[0.0, 15.86, 0.23], [8.92, 15.86, 0.01], ...]}

Windows are [start, end, score] in seconds, best first (files from other toolkits may leave out the
score: [start, end]). A query's qid is the `sample_id` emtm's readers give it:

- jsonl (Lighthouse / Moment-DETR): the file's own qid (written back as an integer when it is one);
- charades_sta: "VID_k", the k-th line (from 0) of video VID in the annotation file;
- activitynet, tacos: "VID_k", the k-th sentence of video VID (TACoS: VID without ".avi").

When reading, integer and string qids are the same query (123 == "123"). The one evaluator
(`emtm.engine.evaluate.score_predictions`) scores what is read, exactly like `emtm evaluate --run`.
The ground truth is a split of a data.yaml, or (`gt_path`) a Lighthouse / Moment-DETR JSON-lines file
as the public standalone evaluators take it (`{"qid", "query", "vid", "duration", "relevant_windows"}`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emtm.config import DataConfig, load_data_config
from emtm.data.annotations import json_lines, read_annotations
from emtm.data.dataset import filter_missing, load_splits, split_dataset
from emtm.data.features import open_feature_store
from emtm.data.records import Sample
from emtm.engine.checkpoint import LoadedRun
from emtm.engine.evaluate import SplitPredictions, predict_dataset
from emtm.errors import DataError, EmtmError
from emtm.io import atomic_open


def qid_of(sample: Sample, fmt: str) -> int | str:
    """The qid written for `sample`: its sample_id, as an int for jsonl files whose qids are ints."""
    sid = sample.sample_id
    if fmt == "jsonl" and sid.lstrip("-").isdigit() and str(int(sid)) == sid:
        return int(sid)
    return sid


def prediction_records(preds: SplitPredictions, fmt: str) -> Iterator[dict[str, Any]]:
    """One record per query, its windows as predicted (`predict_dataset` keeps each window once)."""
    for sample, windows, scores in zip(preds.samples, preds.windows, preds.scores):
        rows = [[start, end, score] for (start, end), score in zip(windows.tolist(), scores.tolist())]
        yield {"qid": qid_of(sample, fmt), "vid": sample.video_id, "query": sample.sentence,
               "pred_relevant_windows": rows}  # fmt: skip


def predict_file(
    run: LoadedRun,
    data_yaml: str | Path,
    split: str,
    out: str | Path,
    device: torch.device,
    top_k: int | None = None,
    batch_size: int = 128,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every query of a split of `data_yaml` with a loaded model and write `out` (JSON lines)."""
    dataset = split_dataset(data_yaml, split, run.vocab, run.cfg.holdout_seed, run.cfg.fold)
    if dataset.store.dim != run.spec.video_dim:
        raise EmtmError(
            f"{dataset.store.path}: features are {dataset.store.dim}-d, this model expects "
            f"{run.spec.video_dim}-d features of the kind it was trained on"
        )
    spec = run.spec  # the model decides how videos and sentences are cut to its grid
    dataset.cfg = dataset.cfg.model_copy(
        update={"max_video_len": spec.max_video_len, "max_query_len": spec.max_query_len,
                "max_word_chars": spec.max_word_chars}
    )  # fmt: skip
    eval_cfg = run.cfg.eval if top_k is None else run.cfg.eval.model_copy(update={"top_k": top_k})
    preds = predict_dataset(run.model, dataset, eval_cfg, device, batch_size, progress=progress)
    with atomic_open(out) as handle:
        for record in prediction_records(preds, dataset.cfg.format):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {
        "n_queries": len(preds.samples),
        "n_videos": len({s.video_id for s in preds.samples}),
        "top_k": eval_cfg.top_k,
    }


def split_samples(data_yaml: str | Path, split: str, seed: int = 0) -> tuple[list[Sample], DataConfig]:
    """The queries of a split, from the annotations alone (features are read only when data.yaml
    sets skip_missing_videos); val without a val split is the seeded hold-out of train videos."""
    cfg = load_data_config(data_yaml)
    splits = load_splits(cfg, seed, names=("train", "val") if split == "val" else (split,))
    if split not in splits:
        raise DataError(f"split {split!r} not found in {data_yaml} (it has {', '.join(cfg.splits)})")
    chosen = splits[split]
    if cfg.skip_missing_videos:
        chosen = filter_missing(chosen, open_feature_store(cfg.features_path()), True, split)
    return chosen.samples, cfg


def read_predictions(
    path: str | Path,
    data_yaml: str | Path | None = None,
    split: str = "test",
    protocol: str = "raw",
    seed: int = 0,
    gt_path: str | Path | None = None,
) -> SplitPredictions:
    """A prediction file matched, qid by qid, to the queries of a split of `data_yaml`, or of the
    ground-truth JSON-lines file `gt_path`; ready for score_predictions.

    Every query needs exactly one line; unknown and repeated qids, a vid that is not the query's
    video, and malformed lines are DataErrors naming the file and line. Windows keep the file's
    order (R@k, mIoU) and their scores (mAP ranks by them; a line with a window without a score is
    ranked in the file's order). The quantized protocol also reads each video's clip count from the
    features (capped at data.yaml's max_video_len), so it needs `data_yaml`.
    """
    path = Path(path)
    if (data_yaml is None) == (gt_path is None):
        raise EmtmError("give the ground truth as one of a data.yaml (and a split) and a JSON-lines file")
    cfg: DataConfig | None = None
    if gt_path is not None:
        if protocol == "quantized":
            raise EmtmError(
                "the quantized protocol reads each video's clip count from the features: give a data.yaml "
                "with `features:` instead of a ground-truth file"
            )
        samples, _ = read_annotations(gt_path, "jsonl")
        where = f"the ground-truth file {gt_path}"
    else:
        samples, cfg = split_samples(data_yaml, split, seed)
        where = f"split {split!r} of {data_yaml}"
    by_qid = {s.sample_id: s for s in samples}
    found: dict[str, tuple[int, np.ndarray]] = {}
    for lineno, record in _records(path):
        qid = record.get("qid")
        if isinstance(qid, bool) or not isinstance(qid, int | str):
            raise DataError(f"'qid' must be an integer or a string, got {qid!r}", path, lineno)
        key = str(qid)
        if key in found:
            raise DataError(f"qid {qid!r} again (first on line {found[key][0]})", path, lineno)
        sample = by_qid.get(key)
        if sample is None:
            raise DataError(
                f"qid {qid!r} is not a query of {where}; is this the right ground truth? "
                "(qids: see emtm.engine.predictions)",
                path,
                lineno,
            )
        if "vid" in record and str(record["vid"]) != sample.video_id:
            raise DataError(
                f"qid {qid!r} is a query of video {sample.video_id!r}, but the line says {record['vid']!r}",
                path,
                lineno,
            )
        found[key] = (lineno, _windows(record, path, lineno))
    missing = [s.sample_id for s in samples if s.sample_id not in found]
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(samples)} queries of {where} have no prediction, e.g. qids "
            f"{missing[:3]}; a prediction file needs one line per query of the ground truth",
            path,
        )
    n_clips = np.zeros(len(samples), dtype=np.int64)
    if protocol == "quantized":
        store = open_feature_store(cfg.features_path())
        lengths = {v: min(len(store.load(v)), cfg.max_video_len) for v in {s.video_id for s in samples}}
        n_clips = np.array([lengths[s.video_id] for s in samples], dtype=np.int64)
    windows = [found[s.sample_id][1][:, :2] for s in samples]
    scores = [found[s.sample_id][1][:, 2] for s in samples]
    return SplitPredictions(windows, scores, samples, n_clips)


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError("prediction file not found (write one with emtm predict --out)", path)
    for lineno, record in json_lines(path):
        for key in ("qid", "pred_relevant_windows"):
            if key not in record:
                raise DataError(
                    f"missing key {key!r} (layout: qid, vid, query, pred_relevant_windows)", path, lineno
                )
        yield lineno, record


def _windows(record: dict[str, Any], path: Path, lineno: int) -> np.ndarray:
    """(k, 3): start and end in seconds, in the file's order (best first), and the score; without a
    score on some window, the scores are -rank (the file's order)."""
    windows = record["pred_relevant_windows"]
    expected = "'pred_relevant_windows' must be a non-empty list of [start, end, score] or [start, end]"
    if not isinstance(windows, list) or not windows:
        raise DataError(f"{expected}, got {windows!r}"[:200], path, lineno)
    out = []
    for i, window in enumerate(windows):
        ok = isinstance(window, list) and len(window) in (2, 3)
        ok = ok and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in window
        )
        if not ok or window[0] > window[1]:
            raise DataError(f"{expected} with start <= end; window {i} is {window!r}", path, lineno)
        out.append(window)
    if all(len(w) == 3 for w in out):
        return np.asarray(out, dtype=np.float64)
    return np.asarray([[w[0], w[1], -rank] for rank, w in enumerate(out)], dtype=np.float64)
