"""The floors of inference: the compute floor (FLOPs / peak FLOP/s) and the memory floor (bytes that
must be read / bandwidth), for this CPU or this GPU and for the H100/H200, and how far a measurement is
from them.

This CPU's peak is estimated, not measured: cores x clock x SIMD lanes x 2 (a fused multiply-add is 2
FLOPs) x FMA units per core (2 on Xeon Scalable parts with AVX-512; an assumption, see the result's
`how`). A large fp32 matmul gives the peak PyTorch reaches in practice. Bandwidth is measured with a
large numpy copy (1 thread; read + write bytes over the time), larger than the last-level cache.
A GPU's ceilings are measured on the card: a bf16 8192^3 matmul and a 2 GiB device-to-device copy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emtm.device import cpu_model, num_threads

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


def measure_gpu_ceilings(device: torch.device) -> dict[str, float]:
    """bf16 matmul FLOP/s (8192^3, random data) and device-to-device copy bandwidth (read + write),
    each the mean of 10 calls after 3 warm-ups."""
    n, copy_bytes = 8192, 2**31  # the copy: 2 GiB of fp32, read once and written once
    matmul_s = _mean_seconds(lambda a, b: a @ b, device, (n, n), torch.bfloat16)
    copy_s = _mean_seconds(lambda a, b: a.copy_(b), device, (copy_bytes // 4,), torch.float32)
    torch.cuda.empty_cache()
    return {"bf16_matmul_flops": 2 * n**3 / matmul_s, "copy_bandwidth": 2 * copy_bytes / copy_s}


def _mean_seconds(
    op: Callable[[torch.Tensor, torch.Tensor], object],
    device: torch.device,
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> float:
    """Mean seconds of op(a, b) on two random tensors of `shape`, over 10 calls after 3 warm-ups."""
    from emtm.device import time_calls

    a = torch.randn(shape, device=device, dtype=dtype)
    b = torch.randn(shape, device=device, dtype=dtype)
    for _ in range(3):
        op(a, b)
    return sum(time_calls(lambda: op(a, b), 10, device)) / 10 / 1000


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
    flops: float,
    bytes_read: float,
    measured_qps: float | None,
    threads: int,
    bandwidth_bytes: int = 1 << 30,
    device: torch.device | None = None,
    measured_variant: str = "eager",
) -> dict[str, Any]:
    """Floors of one model/shape on this device (a CPU: estimated and matmul-measured peaks; a GPU:
    its measured ceilings) and on the H100/H200 (nominal), and the share of the ceiling a measured
    throughput reaches (`measured_variant` names the run that gave it)."""
    report: dict[str, Any] = {
        "flops_per_query": flops,
        "bytes_per_query": bytes_read,
        "gpus": {
            name: {
                **gpu,
                "nominal": floors(flops, bytes_read, gpu["peak_flops"], gpu["bandwidth_nominal"]),
                "measured_bandwidth": floors(flops, bytes_read, gpu["peak_flops"], gpu["bandwidth_measured"]),
            }
            for name, gpu in GPUS.items()
        },
    }
    if device is not None and device.type == "cuda":
        ceilings = measure_gpu_ceilings(device)
        report["gpu"] = {
            "name": torch.cuda.get_device_name(device),
            **ceilings,
            "measured": floors(flops, bytes_read, ceilings["bf16_matmul_flops"], ceilings["copy_bandwidth"]),
        }
        sections = [report["gpu"]["measured"]]
    else:
        cpu = cpu_peak_estimate(threads)
        matmul = measure_matmul_flops(threads)
        bandwidth = measure_copy_bandwidth(bandwidth_bytes)
        report["cpu"] = {
            **cpu,
            "matmul_fp32_flops": matmul,
            "copy_bandwidth": bandwidth,
            "fp32_estimate": floors(flops, bytes_read, cpu["fp32_flops"], bandwidth),
            "fp32_matmul": floors(flops, bytes_read, matmul, bandwidth),
            "bf16_estimate": floors(flops, bytes_read, cpu["bf16_flops"], bandwidth),
        }
        sections = [report["cpu"][key] for key in ("fp32_estimate", "fp32_matmul", "bf16_estimate")]
    if measured_qps:
        report["measured_qps"], report["measured_variant"] = measured_qps, measured_variant
        for section in sections:
            section["measured_share"] = measured_qps / section["ceiling_qps"]
    return report


def limits_line(shape: str, report: dict[str, Any]) -> str:
    """One line for the end of `emtm bench --limits`: the ceiling and how far the fastest run is from it."""
    if "gpu" in report:
        gpu = report["gpu"]
        where = (
            f"{gpu['name']} (measured: bf16 matmul {gpu['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s, "
            f"copy {gpu['copy_bandwidth'] / 1e12:.2f} TB/s)"
        )
        ceiling = gpu["measured"]
    else:
        cpu = report["cpu"]
        where = (
            f"this CPU (fp32 estimate {cpu['fp32_flops'] / 1e9:.0f} GFLOP/s, "
            f"copy {cpu['copy_bandwidth'] / 1e9:.1f} GB/s)"
        )
        ceiling = cpu["fp32_estimate"]
    text = f"{shape}: student floors on {where}: ceiling {ceiling['ceiling_qps']:,.0f} q/s"
    if report.get("measured_qps"):
        text += (
            f"; fastest measured {report['measured_qps']:,.0f} q/s ({report['measured_variant']}), "
            f"{ceiling['measured_share']:.1%} of it"
        )
    return text
