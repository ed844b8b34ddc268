"""`emtm evaluate`'s two sources of predictions, scored the same way: a model (a run or an exported
model folder) run over a split, or a prediction file (JSON lines) against its ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emtm.device import resolve_device
from emtm.engine.evaluate import evaluation_report
from emtm.errors import EmtmError


def score_model(
    path: str, data: str | None, split: str, protocol: str, weights: str = "best", device: str = "auto",
    batch_size: int = 128, progress: bool = True, breakdown: bool = False, sensitivity: bool = False,
    seed: int | None = None,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """(model name, metrics) of the run or model folder at `path` on `split` of `data` (default: the
    data it was trained on); with `sensitivity`, also the query-sensitivity figures."""
    from emtm.data.dataset import split_dataset
    from emtm.engine.checkpoint import load_run
    from emtm.engine.evaluate import predict_dataset
    from emtm.engine.model_dir import is_model_dir, load_model_dir

    dev = resolve_device(device)
    if is_model_dir(path):
        run = load_model_dir(path, dev)
    else:
        run = load_run(path, "last.safetensors" if weights == "last" else "model.safetensors", dev)
    if not (data or run.cfg.data):
        raise EmtmError(f"{path} is an exported model: give --data D.yaml to evaluate it on")
    dataset = split_dataset(data or run.cfg.data, split, run.vocab, run.cfg.holdout_seed, run.cfg.fold)
    eval_cfg = run.cfg.eval.model_copy(update={"protocol": protocol})
    preds = predict_dataset(run.model, dataset, eval_cfg, dev, batch_size, progress=progress)
    metrics = evaluation_report(preds, protocol, breakdown)
    if sensitivity:
        from emtm.engine.sensitivity import query_sensitivity

        metrics["sensitivity"] = query_sensitivity(run.model, dataset, preds, eval_cfg, dev, batch_size, seed)
    metrics.update(split=split, run=str(path), model=run.cfg.model)
    return run.cfg.model, metrics


def score_file(
    preds_path: str, data: str | None, gt: str | None, split: str, protocol: str, seed: int | None = None,
    breakdown: bool = False,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """(file name, metrics) of a prediction file against `data`'s `split` or the JSON-lines `gt`."""
    from emtm.engine.predictions import read_predictions

    preds = read_predictions(preds_path, data, split, protocol, seed, gt)
    metrics = evaluation_report(preds, protocol, breakdown)
    truth = {"gt": str(gt)} if gt else {"data": str(data)}
    metrics.update(split=split, preds=str(preds_path), **truth)
    return Path(preds_path).name, metrics
