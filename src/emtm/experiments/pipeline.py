"""The whole EMTM pipeline on one data.yaml: teachers -> caches -> student alone -> EMTM -> evaluation.

Shared by `emtm recipe` (the paper's benchmarks) and `make demo` (the built-in synthetic benchmark).
Every step is resumable: a finished run is kept, and so is a cache, student export or KAU table
written after its run (one older than its run, retrained in place, is written again); an interrupted
run continues with --resume, and a report written after every run it covers is kept too (delete
report.json to measure again).
Several processes may share one output folder: each run is trained by the process that locks it first
(an OS file lock, released if that process dies), and the others go on to the next run, then wait.
The report follows the paper's table layout: R1@0.3/0.5/0.7, mIoU, FLOPs, params and time per query.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emtm.config import OptimConfig, TrainConfig
from emtm.data.dataset import GroundingDataset, split_dataset
from emtm.device import num_threads, resolve_device
from emtm.engine.checkpoint import export_student, load_run
from emtm.engine.evaluate import SplitPredictions, predict_dataset, score_predictions
from emtm.engine.flops import flops_per_query
from emtm.engine.metrics import temporal_iou
from emtm.engine.teachers import export_teacher
from emtm.engine.train import train
from emtm.experiments.show import kau_summary, show_query
from emtm.io import claim, write_json, write_markdown_table

TIMED_QUERIES = 200  # latency is measured at batch 1 on the first queries of the test split
POLL_SECONDS = 10.0  # how often a process waiting for runs held by other processes looks again


@dataclass
class Stage:
    """One model to train: its registry name, options and optimisation settings."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class Plan:
    teachers: dict[str, Stage]  # run name -> stage; the caches are named after the runs
    student: Stage  # trained alone, and the student half of EMTM (options and optim shared)
    temperature: float = 1.0  # KD temperature; also the teachers' span-logit temperature in the caches
    emtm_options: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Stage] = field(default_factory=dict)  # reported for context, not distilled
    # K >= 2: the caches are out-of-fold: each teacher is also trained K times without one fold of the
    # train videos (fold_epochs of its epochs), and those runs are exported together (engine/teachers.py)
    teacher_folds: int = 0


def fold_epochs(epochs: int, k: int) -> int:
    """Epochs of a run on (K-1)/K of the train split that make as many updates as `epochs` on all of it."""
    return math.ceil(epochs * k / (k - 1))


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
    verb = "resuming" if resume else "training"
    print(f"  {run_dir.name}: {verb} {cfg.model} ({cfg.optim.epochs} epochs)", flush=True)
    train(cfg, run_dir, resume=resume)


def train_seconds(run_dir: Path) -> float:
    """Wall time of the training epochs, summed from log.csv (it survives resumes)."""
    log = run_dir / "log.csv"
    if not log.exists():
        return 0.0
    with log.open(newline="", encoding="utf-8") as handle:
        return round(sum(float(row["seconds"]) for row in csv.DictReader(handle)), 1)


def run_pipeline(
    plan: Plan, data_yaml: Path, out: Path, device: str = "auto", seed: int = 0, threads: int | None = None
) -> dict[str, Any]:
    """Train and evaluate every model of the plan; returns {table name: measurements} (also report.json).

    Every step (training, teacher export, evaluation) runs at `threads` intra-op threads (None: as
    they are); the caller's count is restored afterwards."""
    with num_threads(threads):
        return _run_pipeline(plan, data_yaml, out, device, seed, threads)


def _run_pipeline(
    plan: Plan, data_yaml: Path, out: Path, device: str, seed: int, threads: int | None
) -> dict[str, Any]:
    run: dict[str, Any] = {"device": device, "seed": seed, "threads": threads}

    def config(stage: Stage, teachers: list[str] | None = None, extra: dict[str, Any] | None = None):
        options = {**stage.options, **(extra or {})}
        return TrainConfig(
            data=str(Path(data_yaml).resolve()), model=stage.model, model_options=options,
            teachers=teachers or [], optim=stage.optim, run=run,
        )  # fmt: skip

    step = f"[0/4] baselines: {', '.join(plan.baselines)}"
    jobs = [Job(step, out / name, config(stage)) for name, stage in plan.baselines.items()]
    step = f"[1/4] teachers: {', '.join(plan.teachers)}"
    caches = [out / "caches" / f"{name}.h5" for name in plan.teachers]
    k = plan.teacher_folds
    folds: dict[Path, list[Path]] = {}  # out-of-fold cache -> its fold runs
    for (name, stage), cache in zip(plan.teachers.items(), caches):
        jobs.append(Job(step, out / f"teacher_{name}", config(stage), None if k else cache, plan.temperature))
        if k:
            optim = stage.optim.model_copy(update={"epochs": fold_epochs(stage.optim.epochs, k)})
            fold_stage = Stage(stage.model, stage.options, optim)
            folds[cache] = [out / f"teacher_{name}_fold{i}of{k}" for i in range(k)]
            for i, run_dir in enumerate(folds[cache]):
                cfg = config(fold_stage).model_copy(update={"fold": (i, k)})
                jobs.append(Job(step, run_dir, cfg))
    jobs.append(Job("[2/4] student alone", out / "student_alone", config(plan.student)))
    run_jobs(jobs)
    for cache, fold_runs in folds.items():
        with claim(cache, wait=True):
            export_if_stale(fold_runs, data_yaml, "train", cache, plan.temperature, device)
    print(f"[3/4] EMTM distillation from {len(caches)} teacher(s)")
    extra = {**plan.emtm_options, "n_teachers": len(caches), "temperature": plan.temperature}
    teachers = [str(cache.resolve()) for cache in caches]
    emtm = config(Stage("emtm", plan.student.options, plan.student.optim), teachers, extra)
    with claim(out / "emtm", wait=True):
        train_step(emtm, out / "emtm")
        trained = out / "emtm" / "model.safetensors"
        if not is_newer(out / "emtm" / "student" / "model.safetensors", trained):
            export_student(out / "emtm")
        kau_table(out / "emtm", resolve_device(device))  # how the KAU weighs the teachers on val
    runs = {name: out / name for name in plan.baselines}
    runs.update({f"teacher: {name}": out / f"teacher_{name}" for name in plan.teachers})
    runs.update({"student alone": out / "student_alone", "EMTM student": out / "emtm" / "student"})
    with claim(out / "report", wait=True):
        if report_is_current(out, runs):
            print("[4/4] evaluation on the test split: report.json is newer than every run, kept")
            return json.loads((out / "report.json").read_text())
        print("[4/4] evaluation on the test split")
        report, predictions = {}, {}
        for name, run_dir in runs.items():
            report[name], predictions[name] = measure(run_dir, data_yaml, device, threads)
            report[name]["train_s"] = train_seconds(out / "emtm" if name == "EMTM student" else run_dir)
        per_query = {name: top1_iou(p) for name, p in predictions.items()}
        write_json(
            out / "per_query_iou.json",
            {k: dict(zip(ids(predictions[k]), v.tolist())) for k, v in per_query.items()},
        )
        write_report(out, report)  # last: its time stamp says the evaluation is complete
    return report


@dataclass
class Job:
    """One training run of the pipeline; a teacher's run also writes its train-split cache."""

    step: str  # the pipeline step it belongs to, printed once when the step starts
    run_dir: Path
    cfg: TrainConfig
    cache: Path | None = None
    temperature: float = 1.0

    def run(self) -> None:
        train_step(self.cfg, self.run_dir)
        if self.cache is not None:
            data, device = Path(self.cfg.data), self.cfg.run.device
            export_if_stale([self.run_dir], data, "train", self.cache, self.temperature, device)


def run_jobs(jobs: list[Job]) -> None:
    """Run every job this process can lock; then those that other processes held, each as soon as it is
    free (a finished run is kept; one left by a process that died is resumed here). So several
    processes on one folder (`benchmarks/distill.py`, `emtm recipe`) share the runs, not race on them."""
    held, step = [], None
    for job in jobs:
        if job.step != step:
            print(job.step, flush=True)
            step = job.step
        with claim(job.run_dir) as mine:
            if mine:
                job.run()
            else:
                held.append(job)
    waiting: set[str] = set()
    while held:
        for job in list(held):
            with claim(job.run_dir) as mine:
                if mine:
                    held.remove(job)
                    job.run()
        for job in held:
            if job.run_dir.name not in waiting:
                print(f"  {job.run_dir.name}: held by another process, waiting for it", flush=True)
                waiting.add(job.run_dir.name)
        if held:
            time.sleep(POLL_SECONDS)


def is_newer(path: Path, *sources: Path) -> bool:
    """True when `path` exists and was written after every one of `sources`."""
    return path.exists() and all(src.stat().st_mtime < path.stat().st_mtime for src in sources)


def export_if_stale(
    runs: list[Path], data_yaml: Path, split: str, cache: Path, temperature: float, device: str = "cpu"
) -> None:
    """Export the teacher cache of `runs` (one run, or the K fold runs of an out-of-fold cache) on
    `split` unless `cache` is newer than every run's weights (a teacher retrained in place is exported
    again). `device` (cpu, cuda, auto) is where the teacher runs: the pipeline's, so a GPU when it
    trains on one."""
    if not is_newer(cache, *(run / "model.safetensors" for run in runs)):
        if len(runs) > 1:
            print(f"  {cache.name}: out-of-fold cache from {len(runs)} runs", flush=True)
        export_teacher(runs, data_yaml, split, cache, temperature=temperature, device=device)


def kau_table(run_dir: Path, device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The distilled run's kau.json (how its KAU weighs the teachers on validation), computed again
    when it is missing or older than the run's weights; None for a run without teachers."""
    path = run_dir / "kau.json"
    if is_newer(path, run_dir / "model.safetensors"):
        return json.loads(path.read_text())
    return kau_summary(run_dir, device=device)


def report_is_current(out: Path, runs: dict[str, Path]) -> bool:
    """True when report.json covers exactly these runs and was written after every one of them."""
    path = out / "report.json"
    if not path.exists() or set(json.loads(path.read_text())) != set(runs):
        return False
    return is_newer(path, *(run_dir / "model.safetensors" for run_dir in runs.values()))


def ids(preds: SplitPredictions) -> list[str]:
    return [s.sample_id for s in preds.samples]


def top1_iou(preds: SplitPredictions) -> np.ndarray:
    top1 = np.array([w[0] for w in preds.windows], dtype=np.float64)
    gts = np.array([[s.start, s.end] for s in preds.samples], dtype=np.float64)
    return temporal_iou(top1, gts)


def measure(
    run_dir: Path, data_yaml: Path, device: str, threads: int | None = None
) -> tuple[dict[str, Any], SplitPredictions]:
    """Test metrics (batched), FLOPs and params of the inference model, and batch-1 latency at
    `threads` intra-op threads (None: as they are); the thread count is restored afterwards."""
    with num_threads(threads):
        return _measure(run_dir, data_yaml, resolve_device(device))


def _measure(run_dir: Path, data_yaml: Path, dev: torch.device) -> tuple[dict[str, Any], SplitPredictions]:
    run = load_run(run_dir, device=dev)
    test = split_dataset(data_yaml, "test", run.vocab, run.cfg.run.seed)
    preds = predict_dataset(run.model, test, run.cfg.eval, dev, batch_size=128)
    timed = GroundingDataset(test.samples[:TIMED_QUERIES], test.store, test.vocab, test.cfg)
    started = time.perf_counter()
    predict_dataset(run.model, timed, run.cfg.eval, dev, batch_size=1)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    spec = run.spec.to_spec()
    measurements = {
        **score_predictions(preds),
        "gflops": flops_per_query(run.model, spec, run.spec.max_video_len) / 1e9,
        "params_m": run.model.n_trainable / 1e6,  # trainable; the frozen word vectors are not counted
        "ms_per_query": 1000 * seconds / max(len(timed), 1),
        "device": str(dev),
        "run": str(run_dir),
    }
    return measurements, preds


REPORT_COLUMNS = [
    "Method",
    "R1@0.3",
    "R1@0.5",
    "R1@0.7",
    "mIoU",
    "FLOPs (G)",
    "Params (M)",
    "Time (ms/query, bs 1)",
    "Train (s)",
]


def report_rows(report: dict[str, Any]) -> list[list[Any]]:
    keys = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")
    return [
        [
            name,
            *[m[k] for k in keys],
            f"{m['gflops']:.3f}",
            m["params_m"],
            m["ms_per_query"],
            m.get("train_s", ""),
        ]
        for name, m in report.items()
    ]


def write_report(out: Path, report: dict[str, Any]) -> None:
    write_json(out / "report.json", report)
    write_markdown_table(out / "report.md", REPORT_COLUMNS, report_rows(report))


def write_figures(out: Path, data_yaml: Path, n_each: int = 2) -> list[Path]:
    """The paper's qualitative figure for test queries where the EMTM student beats the student trained
    alone (by top-1 IoU) the most, and for those where it loses the most. Needs run_pipeline's outputs."""

    ious = json.loads((out / "per_query_iou.json").read_text())
    emtm, alone = ious["EMTM student"], ious["student alone"]
    gain = sorted(((emtm[q] - alone[q], q) for q in emtm), reverse=True)
    picks = [("better", q) for g, q in gain[:n_each] if g > 0]
    picks += [("worse", q) for g, q in reversed(gain[-n_each:]) if g < 0]
    teachers = json.loads((out / "emtm" / "config.json").read_text())["train"]["teachers"]
    test_caches = []
    for train_cache in teachers:
        name = Path(train_cache).stem
        cache = out / "caches" / "test" / f"{name}.h5"
        export_if_stale([out / f"teacher_{name}"], data_yaml, "test", cache, _temperature(out))
        test_caches.append(str(cache))
    paths = []
    for kind, sample_id in picks:
        path = out / "figures" / f"{kind}_{sample_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        show_query(out / "emtm", sample_id, path, str(data_yaml), "test", test_caches)
        print(f"  {path} (top-1 IoU {emtm[sample_id]:.2f} vs {alone[sample_id]:.2f} for the student alone)")
        paths.append(path)
    return paths


def _temperature(out: Path) -> float:
    options = json.loads((out / "emtm" / "config.json").read_text())["train"]["model_options"]
    return float(options.get("temperature", 1.0))
