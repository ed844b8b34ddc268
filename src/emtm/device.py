"""The one place that picks and describes a device: `resolve_device`, what a run ran on, thread control,
and timing that waits for the device."""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from emtm.errors import EmtmError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """None or "auto": CUDA when available, else CPU; otherwise the device asked for (an error when it is
    CUDA and no GPU is visible)."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EmtmError("the device cuda was asked for but no CUDA GPU is visible; use cpu or auto")
    return device


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the machine type where that file is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_label(device: torch.device, threads: int | None = None) -> str:
    """E.g. 'Intel(R) Xeon(R) Processor (x86_64), 2 threads' or 'NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = threads or torch.get_num_threads()
    return f"{cpu_model()} ({platform.machine()}), {n} thread{'s' if n != 1 else ''}"


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` intra-op threads (None: leave as is), then restore the previous count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], n: int, device: torch.device) -> list[float]:
    """Milliseconds of each of `n` calls of `fn`: CUDA events on a GPU, perf_counter on the CPU."""
    times = []
    if device.type == "cuda":
        synchronize(device)
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        return times
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return times
