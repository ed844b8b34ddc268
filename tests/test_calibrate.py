"""Per-teacher calibration: a fitted temperature or sigma lowers the held-out hard loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emtm.config import load_data_config
from emtm.data.dataset import prepare
from emtm.data.grid import time_to_index
from emtm.distill.cache import TeacherCache, import_outputs
from emtm.distill.calibrate import SIGMAS, TEMPERATURES, HeldOutChunk, fit_calibration, held_out_loss
from emtm.engine.teachers import export_teacher
from helpers import write_jsonl


def overconfident_span_chunk(n: int = 200, length: int = 30, seed: int = 0) -> HeldOutChunk:
    """A span teacher that puts logit 12 on a clip that is right 60% of the time, else 3 clips off."""
    g = np.random.default_rng(seed)
    truth = g.integers(3, length - 3, size=n)
    picked = np.where(g.random(n) < 0.6, truth, truth + g.choice([-3, 3], size=n))
    logits = torch.zeros(n, length)
    logits[torch.arange(n), torch.from_numpy(picked)] = 12.0
    mask = torch.ones(n, length, dtype=torch.bool)
    t = torch.from_numpy(truth)
    return HeldOutChunk({"start_logits": logits, "end_logits": logits.clone()}, mask, mask, t, t.clone())


def test_a_fitted_temperature_softens_an_overconfident_teacher() -> None:
    chunk = overconfident_span_chunk()
    fit = fit_calibration("span", [chunk])
    assert fit.parameter == "temperature" and fit.value in TEMPERATURES and fit.value > 1.0
    assert fit.held_out_loss < fit.default_loss - 1.0  # the sharp teacher pays for every miss
    assert fit.held_out_loss == pytest.approx(held_out_loss("span", [chunk], {"temperature": fit.value}))
    assert fit.default_loss == pytest.approx(held_out_loss("span", [chunk], {"temperature": 1.0}))
    assert fit.n_queries == 200


def test_a_fitted_sigma_widens_a_noisy_regressor() -> None:
    g = np.random.default_rng(1)
    n, length = 300, 40
    start = g.uniform(0.1, 0.5, n)
    guess = np.clip(start + g.normal(0, 0.15, n), 0, 0.6)  # far noisier than the default sigma of 0.05
    window = torch.tensor(np.stack([guess, guess + 0.3], 1), dtype=torch.float32)
    truth = torch.tensor([time_to_index(s, s + 0.3, 1.0, length) for s in start])
    mask = torch.ones(n, length, dtype=torch.bool)
    fit = fit_calibration(
        "regression", [HeldOutChunk({"window": window}, None, mask, truth[:, 0], truth[:, 1])]
    )
    assert fit.parameter == "sigma_frac" and fit.value in SIGMAS and fit.value > 0.05
    assert fit.held_out_loss < fit.default_loss


def test_export_fits_on_the_runs_validation_queries(
    teacher_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    out = export_teacher(teacher_run, tiny_data, "train", tmp_path / "c.h5", progress=False, calibrate=True)
    meta = TeacherCache(out).meta
    fit = meta.calibration
    run_cfg = json.loads((teacher_run / "config.json").read_text())["train"]
    val = prepare(load_data_config(tiny_data), run_cfg["run"]["seed"], ("train", "val")).splits["val"]
    assert fit["parameter"] == "temperature" and fit["split"] == "val"
    assert fit["n_queries"] == len(val.samples) > 0
    assert meta.temperature == fit["value"] and fit["held_out_loss"] <= fit["default_loss"]
    given = export_teacher(
        teacher_run, tiny_data, "train", tmp_path / "g.h5", temperature=2.0, progress=False, calibrate=True
    )
    assert TeacherCache(given).meta.temperature == 2.0 and TeacherCache(given).meta.calibration is None


def test_export_without_calibration_keeps_the_defaults(cache_path: Path) -> None:
    meta = TeacherCache(cache_path).meta
    assert meta.temperature == 1.0 and meta.sigma_frac == 0.05 and meta.calibration is None


def test_import_calibrates_on_held_out_outputs(tiny_data: Path, tmp_path: Path, split) -> None:
    samples, lengths = split
    prepared = prepare(load_data_config(tiny_data), 0, ("train", "val"))
    g = np.random.default_rng(0)

    def records(queries: list, store) -> list[dict]:
        out = []
        for s in queries:
            n = len(store.load(s.video_id))
            lo, hi = time_to_index(s.start, s.end, s.duration, n)
            shift = g.normal(0, 0.12)  # a regressor 12% of the video off, on average
            begin = min(max(lo / n + shift, 0.0), 0.9)
            end = min(max((hi + 1) / n + shift, begin + 0.05), 1.0)
            out.append({"sample_id": s.sample_id, "unit": "fraction", "window": [begin, end]})
        return out

    train_file = write_jsonl(tmp_path / "train.jsonl", records(samples, prepared.store))
    val_file = write_jsonl(tmp_path / "val.jsonl", records(prepared.splits["val"].samples, prepared.store))
    out = import_outputs(
        "regression", train_file, tiny_data, "train", tmp_path / "c.h5", calibrate_on=val_file
    )
    meta = TeacherCache(out).meta
    assert (
        meta.calibration["parameter"] == "sigma_frac" and meta.sigma_frac == meta.calibration["value"] > 0.05
    )
    assert meta.calibration["held_out_loss"] < meta.calibration["default_loss"]
