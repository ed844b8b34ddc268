"""Faster inference of a loaded model: reduced precision (autocast, or the weights cast once) and
torch.compile.

One mechanism for the Grounder API, `emtm predict` and `emtm bench`'s variants. What to choose was
measured (docs/BENCHMARKS.md, section GPU): on an NVIDIA H200, fp16 autocast + torch.compile ran the
student at 452,588 queries/s at batch 16,384; with the weights and features cast to fp16 once instead
of autocasting every call, 567,686 (4.6x eager fp32), and the top-1 span of 99.5 to 99.6% of queries
stayed the same; bf16 keeps only 96 to 98%. On the CPU, bf16 autocast was slower than fp32, and
torch.compile 1.8x faster at batch 64 after about 40 s of compiling.
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


def cast_model(model: nn.Module, precision: str) -> None:
    """Convert the model's weights and buffers to the precision's dtype in place ("cast"): no autocast
    then, and the video features go in in that dtype too (`model_dtype`)."""
    dtype = PRECISIONS.get(precision)
    if dtype is None:
        raise EmtmError(
            f"cast converts the weights to the precision; choose fp16 (CUDA) or bf16, got {precision!r}"
        )
    model.to(dtype)


def prepare_inference(
    model: nn.Module, precision: str, device: torch.device, cast: bool = False, compile: str | None = None
) -> str:
    """Check the options, cast and/or compile the model in place; returns the precision every call
    then runs under (`autocast(returned, device)`): fp32 when the weights were cast."""
    check_precision(precision, device)
    if cast:
        cast_model(model, precision)
    if compile is not None:
        compile_model(model, compile)
    return "fp32" if cast else precision


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point weight (float32 unless it was cast): the dtype
    its video features go in."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


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
