"""One command per benchmark (`emtm recipe`): teachers -> caches -> EMTM -> evaluation -> report.

Every step is resumable: a finished run or cache is kept, an interrupted run continues with --resume.
The report follows the paper's table layout: R1@0.3/0.5/0.7, mIoU, FLOPs, params and time per query.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from emtm.bench.flops import flops_per_query
from emtm.config import OptimConfig, TrainConfig, read_mapping, validate
from emtm.data.dataset import split_dataset
from emtm.distill.cache import export_teacher
from emtm.engine.checkpoint import export_student, load_run
from emtm.engine.evaluate import predict_dataset, score_predictions
from emtm.engine.train import resolve_device, train
from emtm.errors import EmtmError
from emtm.io import atomic_open, write_json, write_markdown_table

RECIPES = ("charades-sta", "activitynet", "tacos")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str
    splits: dict[str, str]
    durations: str | None = None
    max_video_len: int
    max_query_len: int = 30
    teachers: list[str]
    temperature: float = 1.0
    student_options: dict[str, Any] = Field(default_factory=dict)
    teacher_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    optim: OptimConfig = Field(default_factory=OptimConfig)


def load_recipe(name_or_path: str) -> Recipe:
    path = Path(name_or_path)
    if not path.exists():
        if name_or_path not in RECIPES:
            raise EmtmError(f"unknown recipe {name_or_path!r}: use one of {', '.join(RECIPES)} or a .yaml")
        path = Path(str(resources.files("emtm.recipes") / f"{name_or_path}.yaml"))
    return validate(Recipe, read_mapping(path), str(path))


def write_data_yaml(recipe: Recipe, annotations: Path, features: Path, word_vectors: str, out: Path) -> Path:
    data = {
        "format": recipe.format,
        "splits": {k: str((annotations / v).resolve()) for k, v in recipe.splits.items()},
        "features": str(features.resolve()),
        "word_vectors": word_vectors,
        "max_video_len": recipe.max_video_len,
        "max_query_len": recipe.max_query_len,
    }
    if recipe.durations:
        data["durations"] = str((annotations / recipe.durations).resolve())
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "data.yaml") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return out / "data.yaml"


def finished(run_dir: Path, epochs: int) -> bool:
    metrics = run_dir / "metrics.json"
    if not (metrics.exists() and (run_dir / "model.safetensors").exists()):
        return False
    return len(json.loads(metrics.read_text())["history"]) >= max(epochs, 1)


def train_step(cfg: TrainConfig, run_dir: Path) -> None:
    if finished(run_dir, cfg.optim.epochs):
        print(f"  {run_dir.name}: done, kept")
        return
    resume = (run_dir / "last_state.pt").exists()
    print(f"  {run_dir.name}: {'resuming' if resume else 'training'} {cfg.model} ({cfg.optim.epochs} epochs)")
    train(cfg, run_dir, resume=resume)


def run_recipe(
    recipe: Recipe, annotations: Path, features: Path, word_vectors: str, out: Path, device: str = "auto"
) -> dict[str, Any]:
    data_yaml = write_data_yaml(recipe, annotations, features, word_vectors, out)
    run = {"device": device}

    def config(model: str, options: dict[str, Any], teachers: list[str] | None = None) -> TrainConfig:
        return TrainConfig(
            data=str(data_yaml), model=model, model_options=options, teachers=teachers or [],
            optim=recipe.optim, run=run,
        )  # fmt: skip

    print(f"[1/4] teachers: {', '.join(recipe.teachers)}")
    caches = []
    for name in recipe.teachers:
        train_step(config(name, recipe.teacher_options.get(name, {})), out / f"teacher_{name}")
        cache = out / "caches" / f"{name}.h5"
        if not cache.exists():
            export_teacher(out / f"teacher_{name}", data_yaml, "train", cache, temperature=recipe.temperature)
        caches.append(str(cache))
    print("[2/4] student alone")
    train_step(config("student", recipe.student_options), out / "student_alone")
    print("[3/4] EMTM distillation")
    options = {**recipe.student_options, "n_teachers": len(caches), "temperature": recipe.temperature}
    train_step(config("emtm", options, caches), out / "emtm")
    if not (out / "emtm" / "student" / "model.safetensors").exists():
        export_student(out / "emtm")
    print("[4/4] evaluation and report")
    runs = {f"teacher: {n}": out / f"teacher_{n}" for n in recipe.teachers}
    runs.update({"student alone": out / "student_alone", "EMTM student": out / "emtm" / "student"})
    report = {name: measure(run_dir, data_yaml, device) for name, run_dir in runs.items()}
    write_report(out, report)
    return report


def measure(run_dir: Path, data_yaml: Path, device: str) -> dict[str, Any]:
    dev = resolve_device(device)
    run = load_run(run_dir, device=dev)
    test = split_dataset(data_yaml, "test", run.vocab, run.cfg.run.seed)
    started = time.perf_counter()
    preds = predict_dataset(run.model, test, run.cfg.eval, dev, batch_size=1)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    metrics = score_predictions(preds)
    spec = run.spec.to_spec()
    return {
        **metrics,
        "gflops": flops_per_query(run.model, spec, run.spec.max_video_len) / 1e9,
        "params_m": run.model.n_trainable / 1e6,  # trainable; the frozen word vectors are not counted
        "ms_per_query": 1000 * seconds / max(len(test), 1),
        "device": str(dev),
    }


def write_report(out: Path, report: dict[str, Any]) -> None:
    write_json(out / "report.json", report)
    columns = [
        "Method",
        "R1@0.3",
        "R1@0.5",
        "R1@0.7",
        "mIoU",
        "FLOPs (G)",
        "Params (M)",
        "Time (ms/query, bs 1)",
    ]
    keys = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")
    rows = [
        [name, *[m[k] for k in keys], f"{m['gflops']:.3f}", m["params_m"], m["ms_per_query"]]
        for name, m in report.items()
    ]
    write_markdown_table(out / "report.md", columns, rows)
    print((out / "report.md").read_text())
