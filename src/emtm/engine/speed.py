"""Faster inference of a loaded model: reduced-precision autocast and torch.compile.

One mechanism for the Grounder API, `emtm predict` and `emtm bench`'s variants. What to choose was
measured (docs/BENCHMARKS.md, section GPU): on an NVIDIA H200, fp16 autocast + torch.compile ran the
student at 382,199 queries/s (3.5x eager fp32) and kept the top-1 span of 99.6 to 99.7% of queries;
bf16 kept only 96 to 98%. On the CPU, bf16 autocast was slower than fp32, and torch.compile 1.8x
faster at batch 64 after about 40 s of compiling.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from emtm.errors import EmtmError

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILED_METHODS = ("encode_video", "ground_encoded")  # the student's two halves (Grounder, predict)


def check_precision(precision: str, device: torch.device) -> None:
    """A clear error for an unknown precision, or fp16 where autocast cannot run it."""
    if precision not in PRECISIONS:
        raise EmtmError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise EmtmError("precision fp16 needs a CUDA device; on the CPU use fp32 (fastest there) or bf16")


def autocast(
    precision: str, device: torch.device, cache_enabled: bool = True
) -> contextlib.AbstractContextManager:
    """Autocast to the precision's dtype on the device; fp32 runs as is."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype, cache_enabled=cache_enabled)


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise EmtmError(f"compile mode {mode!r}: choose one of {', '.join(COMPILE_MODES)}")


def compile_model(model: nn.Module, mode: str, dynamic: bool | None = None) -> None:
    """torch.compile the model's inference entry points in place: `forward`, and the student's
    `encode_video` / `ground_encoded` when it has them. The first call of each input shape compiles
    (tens of seconds); it pays off in a long-running process."""
    check_compile_mode(mode)
    options = {"mode": None if mode == "default" else mode, "dynamic": dynamic}
    model.compile(**options)
    for name in COMPILED_METHODS:
        method = getattr(model, name, None)
        if method is not None:
            setattr(model, name, torch.compile(method, **options))
