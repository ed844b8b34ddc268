"""Measurements of one inference callable: latency statistics, peak memory, and the stage split.

Peak memory is the memory an inference needs: the model's weights and buffers, the input batch, and
the highest amount the call allocates on top of them. On CUDA the last part is
torch.cuda.max_memory_allocated() minus what was allocated before the call. On the CPU it comes from
the PyTorch profiler's allocation events (profile_memory=True): the running sum of the bytes the
PyTorch CPU allocator hands out and takes back during the call, at its highest. Memory that libraries
allocate on their own (oneDNN scratch space, onnxruntime's arena) is not seen; onnxruntime rows have
no memory figure. tracemalloc cannot see PyTorch's allocations and ru_maxrss mixes in the interpreter
and every earlier allocation, so neither is used.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from emtm.device import synchronize

# Which submodules or methods make up each stage of a model's inference (emtm.models). Text and video
# encoding default to GroundingEncoder.encode_query / encode_video; fusion is everything else.
PREDICTION_STAGES: dict[str, list[str]] = {
    "student": ["head.predictor", "predict"],
    "seqpan": ["head.predictor", "predict"],
    "emtm": ["head.predictor", "predict"],
    "eamat": ["predictor", "predict"],
    "tan2d": ["score", "predict"],
    "proposals": ["boundary_head", "generate", "scorer", "predict"],
    "regress": ["mlp", "predict"],
    "meanpool": ["mlp", "predict"],
    "prior": ["predict"],
}
ENCODER_STAGES = {"text": ["encoder.encode_query"], "video": ["encoder.encode_video"]}
MEANPOOL_STAGES = {"text": ["words", "query_proj"], "video": ["video_proj"]}
STAGES = ("text", "video", "fusion", "prediction")


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median, 90th percentile, mean and min of a list of milliseconds."""
    values = np.asarray(times_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "mean": float(values.mean()),
        "min": float(values.min()),
        "n": len(times_ms),
    }


def tensor_bytes(tensors: Any) -> int:
    """Bytes held by the tensors of a dict/list/module (shared storage counted once per tensor)."""
    if isinstance(tensors, nn.Module):
        tensors = [*tensors.parameters(), *tensors.buffers()]
    elif isinstance(tensors, dict):
        tensors = list(tensors.values())
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ side prints a line at every start and stop)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_allocation_peak(fn: Callable[[], object]) -> int | None:
    """Highest running total of PyTorch CPU allocations during fn(), from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()
        changes = sorted(
            (e.start_ns(), e.nbytes())
            for e in events
            if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
        )
    except AttributeError:  # the profiler's event API changed: no figure rather than a wrong one
        return None
    running = peak = 0
    for _, nbytes in changes:
        running += nbytes
        peak = max(peak, running)
    return peak


def peak_memory_mb(fn: Callable[[], object], resident_bytes: int, device: torch.device) -> float | None:
    """MiB an inference call needs: resident weights and inputs plus the peak it allocates on top."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        extra = torch.cuda.max_memory_allocated(device) - before
    else:
        extra = _cpu_allocation_peak(fn)
        if extra is None:
            return None
    return (resident_bytes + extra) / 2**20


def stage_paths(model: nn.Module, name: str) -> dict[str, list[str]]:
    """The submodule/method paths of each timed stage of a model (fusion: the rest)."""
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "encode_query"):
        paths = dict(ENCODER_STAGES)
    elif name == "meanpool":
        paths = dict(MEANPOOL_STAGES)
    else:
        paths = {"text": [], "video": []}
    paths["prediction"] = PREDICTION_STAGES.get(name, ["predict"])
    return paths


def _resolve(model: nn.Module, path: str) -> tuple[object, str] | None:
    """(owner, attribute) to wrap for a dotted path: a submodule's `forward`, or a method."""
    owner: object = model
    parts = path.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    target = getattr(owner, parts[-1], None)
    if target is None:
        return None
    if isinstance(target, nn.Module):
        return target, "forward"
    return owner, parts[-1]


@contextlib.contextmanager
def timed_stages(
    model: nn.Module, paths: dict[str, list[str]], device: torch.device
) -> Iterator[dict[str, float]]:
    """Wrap each stage's submodules/methods with a timer (synchronising on CUDA); yields ms per stage.

    The wrappers are instance attributes, removed on exit; the model's code is not touched.
    """
    totals = dict.fromkeys(paths, 0.0)
    patched: list[tuple[object, str]] = []

    def wrap(original: Callable, stage: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            synchronize(device)
            started = time.perf_counter()
            result = original(*args, **kwargs)
            synchronize(device)
            totals[stage] += (time.perf_counter() - started) * 1000.0
            return result

        return timed

    try:
        for stage, stage_list in paths.items():
            for path in stage_list:
                found = _resolve(model, path)
                if found is None or found in patched:
                    continue
                owner, attr = found
                object.__setattr__(owner, attr, wrap(getattr(owner, attr), stage))
                patched.append(found)
        yield totals
    finally:
        for owner, attr in patched:
            object.__delattr__(owner, attr)


def stage_split(
    model: nn.Module, name: str, call: Callable[[], object], runs: int, device: torch.device
) -> dict[str, float]:
    """Median ms per stage (text, video, fusion, prediction incl. decoding) and in all, over `runs` calls.

    Measured with the stage timers in place (each boundary synchronises on CUDA), so `total` can be a
    little above the plain latency.
    """
    per_call: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    paths = stage_paths(model, name)
    for _ in range(runs):
        with timed_stages(model, paths, device) as totals:
            synchronize(device)
            started = time.perf_counter()
            call()
            synchronize(device)
            total = (time.perf_counter() - started) * 1000.0
        fusion = max(total - sum(totals.values()), 0.0)
        for stage, value in {**totals, "fusion": fusion, "total": total}.items():
            per_call[stage].append(value)
    return {stage: statistics.median(values) for stage, values in per_call.items()}
