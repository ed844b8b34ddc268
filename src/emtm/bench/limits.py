"""The floors of inference: the compute floor (FLOPs / peak FLOP/s) and the memory floor (bytes that
must be read / bandwidth), for this CPU and for the H100/H200, and how far a measurement is from them.

This CPU's peak is estimated, not measured: cores x clock x SIMD lanes x 2 (a fused multiply-add is 2
FLOPs) x FMA units per core (2 on Xeon Scalable parts with AVX-512; an assumption, see the result's
`how`). A large fp32 matmul gives the peak PyTorch reaches in practice. Bandwidth is measured with a
large numpy copy (1 thread; read + write bytes over the time), larger than the last-level cache.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emtm.bench.device import cpu_model, num_threads

# Dense bf16 tensor-core peak and memory bandwidth (nominal; typical measured copy bandwidth).
GPUS: dict[str, dict[str, float]] = {
    "H100 SXM": {"peak_flops": 790e12, "bandwidth_nominal": 3.35e12, "bandwidth_measured": 3.0e12},
    "H200": {"peak_flops": 790e12, "bandwidth_nominal": 4.8e12, "bandwidth_measured": 4.3e12},
}


def _cpuinfo() -> tuple[set[str], float]:
    flags: set[str] = set()
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return flags, mhz


def cpu_peak_estimate(threads: int) -> dict[str, Any]:
    """Estimated fp32 (SIMD FMA) and bf16 (AMX, where present) peak FLOP/s of `threads` cores."""
    flags, mhz = _cpuinfo()
    cores = max(1, min(threads, os.cpu_count() or 1))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma_units = 2
    ghz = mhz / 1000 if mhz else 2.0
    fp32 = cores * ghz * 1e9 * lanes * 2 * fma_units
    amx = "amx_bf16" in flags
    bf16 = cores * ghz * 1e9 * 1024 if amx else fp32 * 2
    how = (
        f"{cores} core(s) x {ghz:.2f} GHz x {lanes} fp32 lanes ({'AVX-512' if lanes == 16 else 'AVX2'}) "
        f"x 2 FLOPs per FMA x {fma_units} FMA units"
    )
    if amx:
        how += "; bf16: AMX, 1024 bf16 FLOPs per cycle per core"
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "ghz": ghz,
        "fp32_flops": fp32,
        "bf16_flops": bf16,
        "how": how,
    }


def measure_matmul_flops(threads: int, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of an n x n matmul over 5 tries at `threads` threads."""
    with num_threads(threads):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def measure_copy_bandwidth(nbytes: int = 1 << 30, tries: int = 5) -> float:
    """Bytes/s of a large numpy copy (bytes read + bytes written over the best time), one thread."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - started)
    return 2 * src.nbytes / best


def floors(flops: float, bytes_read: float, peak_flops: float, bandwidth: float) -> dict[str, float]:
    """Per-query floors in microseconds and the queries/s ceiling they imply."""
    compute_us = flops / peak_flops * 1e6
    memory_us = bytes_read / bandwidth * 1e6
    return {
        "compute_floor_us": compute_us,
        "memory_floor_us": memory_us,
        "ceiling_qps": 1e6 / max(compute_us, memory_us),
    }


def limits_report(
    flops: float, bytes_read: float, measured_qps: float | None, threads: int, bandwidth_bytes: int = 1 << 30
) -> dict[str, Any]:
    """Floors of one model/shape on this CPU (estimated and matmul-measured peaks) and on the GPUs."""
    cpu = cpu_peak_estimate(threads)
    matmul = measure_matmul_flops(threads)
    bandwidth = measure_copy_bandwidth(bandwidth_bytes)
    report: dict[str, Any] = {
        "flops_per_query": flops,
        "bytes_per_query": bytes_read,
        "cpu": {
            **cpu,
            "matmul_fp32_flops": matmul,
            "copy_bandwidth": bandwidth,
            "fp32_estimate": floors(flops, bytes_read, cpu["fp32_flops"], bandwidth),
            "fp32_matmul": floors(flops, bytes_read, matmul, bandwidth),
            "bf16_estimate": floors(flops, bytes_read, cpu["bf16_flops"], bandwidth),
        },
        "gpus": {
            name: {
                **gpu,
                "nominal": floors(flops, bytes_read, gpu["peak_flops"], gpu["bandwidth_nominal"]),
                "measured_bandwidth": floors(flops, bytes_read, gpu["peak_flops"], gpu["bandwidth_measured"]),
            }
            for name, gpu in GPUS.items()
        },
    }
    if measured_qps:
        report["measured_qps"] = measured_qps
        for key in ("fp32_estimate", "fp32_matmul", "bf16_estimate"):
            report["cpu"][key]["measured_share"] = measured_qps / report["cpu"][key]["ceiling_qps"]
    return report
