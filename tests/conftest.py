from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from emtm.config import TrainConfig, load_data_config
from emtm.data import synth
from emtm.data.dataset import prepare
from emtm.data.records import Sample
from emtm.engine.teachers import export_teacher
from emtm.engine.train import train

REPO = Path(__file__).resolve().parents[1]
SHARED_ANNOTATIONS = REPO.parent / "shared" / "data" / "annotations"
# The harnesses that tests and benchmarks share (shape_videos, shapes_e2e, serve_child, serve_loadtest) live
# in benchmarks/, outside the installed package; the benchmark scripts import them from their own folder.
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import a script of benchmarks/ by name (they are scripts, not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic benchmark, written once per test session; returns its data.yaml."""
    return synth.generate(synth.PRESETS["tiny"], tmp_path_factory.mktemp("tiny"), progress=False)


@pytest.fixture(scope="session")
def learnable_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny benchmark with 100 train videos and less noise (0.15): enough for a 12-epoch student to
    beat the moment prior at any seed, where the tiny preset's 10 validation queries leave it to luck."""
    config = dataclasses.replace(synth.PRESETS["tiny"], n_train_videos=100, n_test_videos=20, noise_std=0.15)
    return synth.generate(config, tmp_path_factory.mktemp("learnable"), progress=False)


# Teacher-cache fixtures, shared by the cache and calibration tests.
@pytest.fixture(scope="session")
def teacher_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch tiny student run, standing in for a teacher."""
    torch.set_num_threads(1)
    cfg = TrainConfig(
        data=str(tiny_data),
        model="student",
        model_options={"d": 32, "n_heads": 4},
        optim={"epochs": 1, "batch_size": 16, "lr": 2e-3},
        run={"progress": False, "device": "cpu"},
    )
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    train(cfg, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def cache_path(teacher_run: Path, tiny_data: Path) -> Path:
    return export_teacher(teacher_run, tiny_data, "train", teacher_run / "cache.h5", progress=False)


@pytest.fixture(scope="session")
def split(tiny_data: Path) -> tuple[list[Sample], dict[str, int]]:
    """The train samples and the student grid length of each (all tiny videos are shorter than 64)."""
    prepared = prepare(load_data_config(tiny_data), 0, ("train",))
    samples = prepared.splits["train"].samples
    return samples, {s.sample_id: len(prepared.store.load(s.video_id)) for s in samples}
