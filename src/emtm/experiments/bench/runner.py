"""`emtm bench`: params, FLOPs, latency, throughput, peak memory and the stage split of every model,
side by side in one process, plus the student's inference variants checked against eager fp32.

Models run in turns (round robin, in blocks of calls) so that a noisy machine slows them alike, and
each row's ratio to the student comes from the same run. Inputs are distinct random queries of
`words` words over full-length videos of the shape's L clips (1024-d features by default), a
1,300-word vocabulary of 50-d vectors; latency is one query per call (forward + top-1 decoding on the
device), throughput a batch of `batch` queries per call.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from emtm.device import device_label, num_threads, synchronize, time_calls
from emtm.engine.flops import count_parameters, flops_per_query, random_batch
from emtm.errors import ConfigError, EmtmError
from emtm.experiments.bench.measure import peak_memory_mb, stage_split, summarize, tensor_bytes
from emtm.experiments.bench.variants import (
    INPUT_KEYS,
    EagerRunner,
    Runner,
    Variant,
    auto_variants,
    build_runner,
    compare_outputs,
    merge_agreement,
    parse_variant,
)
from emtm.models.base import DataSpec, GroundingModel

SCHEMA = "emtm-bench/1"
SHAPES = {"tiny": 16, "charades": 64, "anet": 100, "tacos": 256}
DEFAULT_MODELS = ("student", "seqpan", "eamat", "tan2d", "proposals", "regress", "meanpool", "prior")
VOCAB_SIZE, WORD_DIM, N_CHARS, MAX_QUERY_LEN = 1300, 50, 60, 30
FLOPS_NOTE = "FLOPs = 2 x multiply-accumulates of one forward pass at batch 1 (torch.utils.flop_counter)"


@dataclass
class BenchSettings:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    shapes: list[str] = field(default_factory=lambda: ["charades"])
    device: str = "cpu"
    threads: int | None = None
    runs: int = 100
    warmup: int = 10
    batch: int | None = None  # CPU 64, CUDA 1024
    throughput_reps: int = 5
    max_seconds: float = 30.0  # stop repeating a slow model's throughput pass after this (>= 2 passes)
    words: int = 8
    video_dim: int = 1024
    variants: str = "auto"  # auto, all (auto + torch.compile on CPU), none, or a comma list
    check_queries: int = 256
    seed: int = 0
    run_dirs: list[str] = field(default_factory=list)
    limits: bool = False
    progress: bool = True


@dataclass
class Subject:
    """One model at one shape."""

    label: str
    name: str  # registry name
    model: GroundingModel
    spec: DataSpec
    max_chars: int = 16
    run_dir: str | None = None


@dataclass
class Candidate:
    subject: Subject
    variant: str
    runner: Runner | None
    threads: int
    cached: bool = False
    error: str | None = None
    first_call_s: float | None = None
    prepared: dict[int, Any] = field(default_factory=dict)  # batch size -> runner.prepare(batch)
    latency: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    memory: dict[str, float | None] = field(default_factory=dict)
    split: dict[str, float] | None = None
    agreement: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------- subjects
def synthetic_subjects(settings: BenchSettings, device: torch.device) -> list[tuple[str, int, list[Subject]]]:
    """Default-config models at each named shape; the student always comes first (the reference)."""
    from emtm.models.registry import build_model, model_config

    unknown = [s for s in settings.shapes if s not in SHAPES]
    if unknown:
        raise ConfigError(f"unknown shape(s) {unknown}; choose from {', '.join(SHAPES)}")
    names = ["student", *(m for m in settings.models if m != "student")]
    if "emtm" in names:
        raise ConfigError("'emtm' is the training-time joint model; bench 'student' (its inference path)")
    groups = []
    for shape in settings.shapes:
        length = SHAPES[shape]
        words = torch.randn(VOCAB_SIZE, WORD_DIM, generator=torch.Generator().manual_seed(settings.seed))
        words[:2] = 0.0  # PAD and UNK rows
        spec = DataSpec(settings.video_dim, length, words, N_CHARS, MAX_QUERY_LEN)
        subjects = []
        for name in names:
            config = model_config(name)  # ConfigError naming the models for an unknown name
            torch.manual_seed(settings.seed)
            model = build_model(name, config, spec).to(device).eval()
            subjects.append(Subject(name, name, model, spec))
        groups.append((shape, length, subjects))
    return groups


def run_subjects(settings: BenchSettings, device: torch.device) -> list[tuple[str, int, list[Subject]]]:
    """Trained runs (their config, vocabulary size and weights), grouped by their clip grid L."""
    from emtm.engine.checkpoint import load_run

    by_length: dict[int, list[Subject]] = {}
    for run_dir in settings.run_dirs:
        run = load_run(run_dir, device=device)
        if run.cfg.model == "emtm":
            raise EmtmError(
                f"{run_dir} is a joint EMTM training run (student + teacher branch); bench the student "
                f"it exported instead: --run {Path(run_dir) / 'student'}"
            )
        subject = Subject(
            Path(run_dir).name or str(run_dir),
            run.cfg.model,
            run.model.eval(),
            run.spec.to_spec(),
            run.spec.max_word_chars,
            str(run_dir),
        )
        by_length.setdefault(run.spec.max_video_len, []).append(subject)
    return [(f"run L={length}", length, subjects) for length, subjects in sorted(by_length.items())]


def resolve_variants(settings: BenchSettings, device: torch.device, base_threads: int) -> list[Variant]:
    text = settings.variants.strip()
    if text in ("", "none"):
        return []
    if text in ("auto", "all"):
        names = auto_variants(device, base_threads, everything=text == "all")
    else:
        names = [v for v in text.split(",") if v.strip()]
    return [parse_variant(name) for name in names]


# ---------------------------------------------------------------------------------------------- measuring
class Batches:
    """The inputs of one shape, made once and shared by every candidate with the same data spec."""

    def __init__(self, settings: BenchSettings, device: torch.device, n_clips: int, batch_size: int):
        self.settings, self.device, self.n_clips, self.batch_size = settings, device, n_clips, batch_size
        self.cache: dict[tuple, Any] = {}

    def get(
        self, subject: Subject, size: int, one_video: bool = False, index: int = 0
    ) -> dict[str, torch.Tensor]:
        spec = subject.spec
        key = (
            spec.video_dim,
            spec.word_vectors.shape[0],
            spec.n_chars,
            subject.max_chars,
            size,
            one_video,
            index,
        )
        if key not in self.cache:
            seed = self.settings.seed + 1 + index + (1000 if one_video else 0) + size
            self.cache[key] = random_batch(
                spec, self.n_clips, size, self.settings.words, seed, one_video, subject.max_chars, self.device
            )
        return self.cache[key]


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"


def prepare_candidate(
    cand: Candidate, batches: Batches, settings: BenchSettings, device: torch.device
) -> None:
    """Prepare both batch sizes and warm up; the time of preparing and of the first call at each size
    is kept (torch.compile compiles on the first call, or in prepare() when a CUDA graph captures it)."""
    assert cand.runner is not None
    first = 0.0
    for size in (1, batches.batch_size):
        batch = batches.get(cand.subject, size, cand.cached)
        started = time.perf_counter()
        cand.prepared[size] = cand.runner.prepare(batch)
        cand.runner(cand.prepared[size])
        synchronize(device)
        first += time.perf_counter() - started
    cand.first_call_s = first
    for _ in range(max(settings.warmup - 1, 0)):
        cand.runner(cand.prepared[1])
    cand.runner(cand.prepared[batches.batch_size])
    synchronize(device)


def measure_memory(cand: Candidate, batches: Batches, device: torch.device) -> None:
    if cand.variant.startswith("onnx") or "+onnx" in cand.variant:
        cand.memory = {"batch1": None, "batchN": None}
        return
    model_bytes = tensor_bytes(cand.runner.model)  # a `cast` variant keeps its own half-size copy
    for key, size in (("batch1", 1), ("batchN", batches.batch_size)):
        batch = cand.runner.inputs(batches.get(cand.subject, size, cand.cached))
        inputs = tensor_bytes({k: batch[k] for k in INPUT_KEYS})
        prepared = cand.prepared[size]
        cand.memory[key] = peak_memory_mb(lambda p=prepared: cand.runner(p), model_bytes + inputs, device)


def reference_outputs(
    subject: Subject, batches: Batches, n_batches: int, one_video: bool, device: torch.device
) -> list:
    eager = EagerRunner(subject.model, device)
    outs = []
    for i in range(n_batches):
        batch = batches.get(subject, batches.batch_size, one_video, index=1 + i)
        out = eager(batch)
        outs.append({k: out[k].float().cpu() for k in ("start_logits", "end_logits")})
    return outs


def check_agreement(cand: Candidate, batches: Batches, references: list, device: torch.device) -> None:
    parts = []
    for i, reference in enumerate(references):
        batch = batches.get(cand.subject, batches.batch_size, cand.cached, index=1 + i)
        outputs = cand.runner(cand.runner.prepare(batch))
        synchronize(device)
        parts.append(compare_outputs(reference, outputs, batch["video_mask"]))
    cand.agreement = merge_agreement(parts)


def round_robin(
    cands: list[Candidate],
    blocks: int,
    step: Callable[[Candidate, int], None],
    bar: tqdm,
    skip: Callable[[Candidate], bool] | None = None,
) -> None:
    """Block after block, each candidate in turn (at its thread count), so noise hits them alike."""
    for block in range(blocks):
        for cand in cands:
            if cand.error or (skip and skip(cand)):
                continue
            with num_threads(cand.threads):
                step(cand, block)
        bar.update(1)


def bench_group(
    shape: str,
    n_clips: int,
    subjects: list[Subject],
    variants: list[Variant],
    settings: BenchSettings,
    device: torch.device,
    base_threads: int,
    batch_size: int,
    bar: tqdm,
) -> list[dict[str, Any]]:
    """Every measurement of one shape's models and the student's variants; returns the rows."""
    batches = Batches(settings, device, n_clips, batch_size)
    static = {}
    for subject in subjects:
        bar.set_description(f"{shape}: FLOPs {subject.label}")
        static[subject.label] = {
            "flops": flops_per_query(subject.model, subject.spec, n_clips, settings.words),
            **count_parameters(subject.model),
        }
    cands = [Candidate(s, "eager", EagerRunner(s.model, device), base_threads) for s in subjects]
    student = next((s for s in subjects if s.name == "student"), None)
    if student is not None:
        example = {k: v.cpu() for k, v in batches.get(student, 1).items()}
        for variant in variants:
            threads = variant.threads or base_threads
            cand = Candidate(student, variant.name, None, threads, variant.cached)
            try:
                with num_threads(threads):
                    cand.runner = build_runner(variant, student.model, device, example, threads)
            except Exception as err:  # noqa: BLE001 - a variant that cannot run is a row saying why
                cand.error = _error_text(err)
            cands.append(cand)

    with torch.inference_mode():
        for cand in cands:
            if cand.error:
                continue
            bar.set_description(f"{shape}: warm-up {cand.subject.label} [{cand.variant}]")
            try:
                with num_threads(cand.threads):
                    prepare_candidate(cand, batches, settings, device)
                    measure_memory(cand, batches, device)
                    if cand.variant == "eager":
                        split_runs = max(3, min(settings.runs, 25))
                        call = lambda c=cand: c.runner(c.prepared[1])  # noqa: E731
                        cand.split = stage_split(
                            cand.subject.model, cand.subject.name, call, split_runs, device
                        )
            except Exception as err:  # noqa: BLE001
                cand.error = _error_text(err)
            bar.update(1)
        variant_cands = [c for c in cands if c.variant != "eager" and not c.error]
        if variant_cands and student is not None:
            n_check = max(1, -(-settings.check_queries // batch_size))
            refs = {}
            for cand in variant_cands:
                bar.set_description(f"{shape}: checking [{cand.variant}] against eager fp32")
                if cand.cached not in refs:
                    refs[cand.cached] = reference_outputs(student, batches, n_check, cand.cached, device)
                try:
                    with num_threads(cand.threads):
                        check_agreement(cand, batches, refs[cand.cached], device)
                except Exception as err:  # noqa: BLE001
                    cand.error = _error_text(err)

        blocks = max(1, min(10, settings.runs))
        per_block = [
            settings.runs // blocks + (1 if i < settings.runs % blocks else 0) for i in range(blocks)
        ]
        bar.set_description(f"{shape}: latency at batch 1")

        def latency_step(cand: Candidate, block: int) -> None:
            cand.latency += time_calls(lambda: cand.runner(cand.prepared[1]), per_block[block], device)

        round_robin(cands, blocks, latency_step, bar)
        bar.set_description(f"{shape}: throughput at batch {batch_size}")

        def throughput_step(cand: Candidate, block: int) -> None:
            cand.throughput += time_calls(lambda: cand.runner(cand.prepared[batch_size]), 1, device)

        def too_slow(cand: Candidate) -> bool:
            return len(cand.throughput) >= 2 and sum(cand.throughput) / 1000 > settings.max_seconds

        round_robin(cands, max(settings.throughput_reps, 1), throughput_step, bar, too_slow)
    for subject in subjects:
        batch = batches.get(subject, 1)
        static[subject.label]["input_bytes"] = tensor_bytes({k: batch[k] for k in INPUT_KEYS})
    return make_rows(shape, n_clips, cands, static, device, batch_size)


def make_rows(
    shape: str, n_clips: int, cands: list[Candidate], static: dict, device: torch.device, batch_size: int
) -> list[dict[str, Any]]:
    rows = []
    for cand in cands:
        info = static[cand.subject.label]
        latency = summarize(cand.latency) if cand.latency else None
        throughput = None
        if cand.throughput:
            throughput = batch_size / (summarize(cand.throughput)["p50"] / 1000.0)
        rows.append(
            {
                "model": cand.subject.label,
                "registry_name": cand.subject.name,
                "run_dir": cand.subject.run_dir,
                "shape": shape,
                "n_clips": n_clips,
                "variant": cand.variant,
                "device": device_label(device, cand.threads),
                "threads": cand.threads if device.type == "cpu" else None,
                "params_trainable": info["trainable"],
                "params_total": info["total"],
                "flops": info["flops"],
                "gflops": info["flops"] / 1e9,
                "input_bytes_per_query": info["input_bytes"],
                "latency_ms": latency,
                "batch": batch_size,
                "throughput_qps": throughput,
                "throughput_passes": len(cand.throughput),
                "peak_memory_mib": cand.memory or None,
                "split_ms": cand.split,
                "agreement": cand.agreement,
                "first_calls_s": cand.first_call_s,
                "error": cand.error,
            }
        )
    add_ratios(rows)
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """vs_student: each row / the eager student row of the same shape (throughput: higher is faster)."""
    ref = next((r for r in rows if r["registry_name"] == "student" and r["variant"] == "eager"), None)
    for row in rows:
        if ref is None:
            row["vs_student"] = None
            continue
        lat = row["latency_ms"]["p50"] if row["latency_ms"] else None
        ref_lat = ref["latency_ms"]["p50"] if ref["latency_ms"] else None
        row["vs_student"] = {
            "flops": _ratio(row["flops"], ref["flops"]),
            "params_trainable": _ratio(row["params_trainable"], ref["params_trainable"]),
            "latency_p50": _ratio(lat, ref_lat),
            "throughput": _ratio(row["throughput_qps"], ref["throughput_qps"]),
        }


def limits_section(rows: list[dict[str, Any]], threads: int, device: torch.device) -> dict[str, Any]:
    """The student's floors at each benched shape on this device (emtm.experiments.bench.limits),
    and how far its fastest row (eager or a variant) is from them."""
    from emtm.experiments.bench.limits import limits_report

    out = {}
    for shape in dict.fromkeys(r["shape"] for r in rows):
        students = [
            r for r in rows if r["shape"] == shape and r["registry_name"] == "student" and not r["error"]
        ]
        if not students:
            continue
        fastest = max(students, key=lambda r: r["throughput_qps"] or 0.0)
        out[shape] = limits_report(
            fastest["flops"],
            fastest["input_bytes_per_query"],
            fastest["throughput_qps"],
            threads,
            device=device,
            measured_variant=fastest["variant"],
        )
    return out


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Measure everything `settings` asks for; returns the JSON-able result (see docs/BENCHMARKS.md)."""
    from emtm.device import resolve_device

    device = resolve_device(settings.device)
    if settings.runs < 1 or settings.warmup < 0 or (settings.batch is not None and settings.batch < 1):
        raise ConfigError("--runs and --batch must be >= 1 and --warmup >= 0")
    base_threads = settings.threads or torch.get_num_threads()
    batch_size = settings.batch or (1024 if device.type == "cuda" else 64)
    variants = resolve_variants(settings, device, base_threads)
    with num_threads(base_threads):
        groups = run_subjects(settings, device) if settings.run_dirs else synthetic_subjects(settings, device)
        n_steps = sum(
            len(subjects)
            + (len(variants) if any(s.name == "student" for s in subjects) else 0)
            + max(1, min(10, settings.runs))
            + max(settings.throughput_reps, 1)
            for _, _, subjects in groups
        )
        result: dict[str, Any] = {
            "schema": SCHEMA,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": device_label(device, base_threads),
            "torch": torch.__version__,
            "settings": {
                "runs": settings.runs,
                "warmup": settings.warmup,
                "batch": batch_size,
                "throughput_reps": settings.throughput_reps,
                "words": settings.words,
                "video_dim": settings.video_dim if not settings.run_dirs else None,
                "shapes": {shape: n for shape, n, _ in groups},
                "variants": [v.name for v in variants],
                "flops": FLOPS_NOTE,
                "memory": "weights + inputs + peak allocated during one call (bench.measure)",
            },
            "rows": [],
        }
        with tqdm(total=n_steps, disable=not settings.progress, desc="bench", leave=False) as bar:
            for shape, n_clips, subjects in groups:
                result["rows"] += bench_group(
                    shape, n_clips, subjects, variants, settings, device, base_threads, batch_size, bar
                )
        if settings.limits:
            result["limits"] = limits_section(result["rows"], base_threads, device)
    return result
