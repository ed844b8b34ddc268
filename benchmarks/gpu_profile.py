"""The student's inference on a GPU, looked at closely: this GPU's measured ceilings, the floors they
put under the student, a sweep of variants x batch sizes, and a profile of where the time goes.

    python benchmarks/gpu_profile.py --out runs/gpu [--shape charades] [--batches 1,1024,4096,16384]
        [--variants eager,bf16,fp16,bf16+compile,...] [--compile-batches 1,4096,16384]

Writes DIR/gpu_profile.json and DIR/gpu_profile.md and prints the tables. Needs CUDA. The ceilings
are measured here, once per run: a bf16 8192^3 matmul (mean of 10 after 3 warm-ups, random data) and
a device-to-device copy of 2 GiB (bytes read + written over the mean time). The floors are
FLOPs/query over the matmul rate and input bytes/query over the copy bandwidth
(emtm.experiments.bench.limits).
Each sweep cell runs `--passes` timed calls (CUDA events) after 3 warm-up calls and is checked
against eager fp32 at the same batch (share of the same top-1 spans, max relative probability error).
The profile runs torch.profiler over 5 calls: kernels launched per call, GPU kernel time per call
next to the wall time per call (when kernels take far less than the wall time, the launches, not
the arithmetic, set the pace), and the kernels that take the most time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from emtm.device import synchronize, time_calls
from emtm.engine.flops import flops_per_query, random_batch
from emtm.experiments.bench.limits import floors, measure_gpu_ceilings
from emtm.experiments.bench.measure import summarize, tensor_bytes
from emtm.experiments.bench.runner import SHAPES, BenchSettings, synthetic_subjects
from emtm.experiments.bench.variants import (
    INPUT_KEYS,
    EagerRunner,
    build_runner,
    compare_outputs,
    parse_variant,
)
from emtm.io import atomic_open, write_json

DEFAULT_VARIANTS = "eager,bf16,fp16,bf16+compile,bf16+graph,bf16+compile:max-autotune-no-cudagraphs"


def sweep_variant(
    name: str, model, spec, n_clips: int, sizes: list[int], passes: int, device: torch.device
) -> list[dict[str, Any]]:
    """One variant at each batch size: queries/s, ms per call, agreement with eager fp32."""
    cells = []
    example = {k: v.cpu() for k, v in random_batch(spec, n_clips, 1).items()}
    try:
        runner = build_runner(parse_variant(name), model, device, example, threads=1)
    except Exception as err:  # noqa: BLE001 - a variant that cannot run is a row saying why
        return [
            {"variant": name, "batch": size, "error": f"{type(err).__name__}: {err}"[:300]} for size in sizes
        ]
    for size in sizes:
        cell: dict[str, Any] = {"variant": name, "batch": size}
        try:
            batch = random_batch(spec, n_clips, size, seed=size, device=device)
            started = time.perf_counter()  # compiling happens in prepare() (graph) or the first call
            prepared = runner.prepare(batch)
            runner(prepared)
            synchronize(device)
            cell["first_call_s"] = time.perf_counter() - started
            for _ in range(2):
                runner(prepared)
            times = time_calls(lambda p=prepared: runner(p), passes if size > 1 else max(passes, 100), device)
            stats = summarize(times)
            cell["ms_per_call"] = stats
            cell["qps"] = size / (stats["p50"] / 1000)
            reference = EagerRunner(model, device)(batch)
            cell["agreement"] = compare_outputs(reference, runner(prepared), batch["video_mask"])
        except Exception as err:  # noqa: BLE001 - out of memory at a large batch is a cell saying so
            cell["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        finally:
            batch = prepared = None
            torch.cuda.empty_cache()
        cells.append(cell)
    return cells


def _device_time(event) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(event, attr, None)
        if value is not None:
            return float(value)
    return 0.0


def profile_call(name: str, model, spec, n_clips: int, size: int, device: torch.device) -> dict[str, Any]:
    """torch.profiler over 5 calls of one variant at one batch size: kernels per call, kernel time per
    call, wall time per call, and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    example = {k: v.cpu() for k, v in random_batch(spec, n_clips, 1).items()}
    runner = build_runner(parse_variant(name), model, device, example, threads=1)
    batch = random_batch(spec, n_clips, size, seed=7, device=device)
    prepared = runner.prepare(batch)
    for _ in range(3):
        runner(prepared)
    wall = summarize(time_calls(lambda: runner(prepared), 50, device))["p50"]
    calls = 5
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            runner(prepared)
        synchronize(device)
    kernels = []
    for event in prof.key_averages():
        device_us = _device_time(event)
        if str(getattr(event, "device_type", "")).endswith("CUDA") and device_us > 0:
            kernels.append({"name": event.key[:90], "calls": event.count / calls, "us": device_us / calls})
    kernels.sort(key=lambda k: -k["us"])
    try:  # the profiler's own table, in case its event attributes differ in this torch version
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15)
    except Exception as err:  # noqa: BLE001
        table = repr(err)
    return {
        "table": table,
        "variant": name,
        "batch": size,
        "wall_ms_per_call": wall,
        "kernels_per_call": sum(k["calls"] for k in kernels),
        "kernel_ms_per_call": sum(k["us"] for k in kernels) / 1000,
        "top_kernels": kernels[:12],
    }


def markdown(result: dict[str, Any]) -> str:
    c, f = result["ceilings"], result["floors"]
    lines = [
        f"Device: {result['device']}, torch {result['torch']}; student at {result['shape']} "
        f"(L = {result['n_clips']}), {result['flops_per_query'] / 1e6:.1f} MFLOPs and "
        f"{result['bytes_per_query'] / 1e3:.1f} kB of inputs per query.",
        "",
        "| ceiling (measured here) | value |",
        "|---|---|",
        f"| bf16 matmul 8192^3 | {c['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s |",
        f"| device-to-device copy (read + write) | {c['copy_bandwidth'] / 1e12:.2f} TB/s |",
        f"| compute floor per query | {f['compute_floor_us'] * 1000:.3f} ns |",
        f"| memory floor per query | {f['memory_floor_us'] * 1000:.3f} ns |",
        f"| ceiling | {f['ceiling_qps'] / 1e6:.1f} M queries/s |",
        "",
        "| variant | batch | queries/s | ms per call (p50) | share of ceiling | same span | max rel. "
        "prob err | prepare + first call s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in result["sweep"]:
        if "error" in cell:
            lines.append(f"| {cell['variant']} | {cell['batch']} | error: {cell['error'][:80]} | | | | | |")
            continue
        agree = cell["agreement"]
        lines.append(
            f"| {cell['variant']} | {cell['batch']} | {cell['qps']:,.0f} | "
            f"{cell['ms_per_call']['p50']:.3f} | "
            f"{cell['qps'] / f['ceiling_qps']:.2%} | {agree['same_span']:.3f} | "
            f"{agree['max_rel_prob_err']:.2e} | {cell['first_call_s']:.1f} |"
        )
    for prof in result["profiles"]:
        if "error" in prof:
            lines += ["", f"Profile {prof['variant']} @ {prof['batch']}: error {prof['error']}"]
            continue
        lines += [
            "",
            f"**Profile: {prof['variant']} at batch {prof['batch']}**: "
            f"{prof['kernels_per_call']:.0f} kernels "
            f"per call, {prof['kernel_ms_per_call']:.3f} ms of kernel time per call, "
            f"{prof['wall_ms_per_call']:.3f} ms wall per call.",
            "",
            "| kernel | calls per call | us per call |",
            "|---|---|---|",
        ]
        lines += [f"| `{k['name']}` | {k['calls']:.0f} | {k['us']:.1f} |" for k in prof["top_kernels"]]
        if not prof["top_kernels"]:
            lines += ["", "```", prof["table"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu_profile")
    parser.add_argument("--shape", default="charades", choices=[s for s in SHAPES if s != "tiny"] + ["tiny"])
    parser.add_argument("--batches", default="1,1024,4096,16384")
    parser.add_argument("--compile-batches", default="4096,16384", help="batch sizes of compiled variants")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--passes", type=int, default=20, help="timed calls per cell (batch 1: at least 100)")
    parser.add_argument("--profile", default="eager@1,bf16+graph@1,bf16+compile@16384")
    parser.add_argument(
        "--profile-first", action="store_true", help="profile before the sweep (a slow cell cannot skip it)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds: cells and profiles not started by then are listed as skipped (the results so far "
        "are written after every cell, so a run cut short keeps them)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def late() -> bool:
        return args.deadline is not None and time.perf_counter() - started > args.deadline

    if not torch.cuda.is_available():
        print("gpu_profile: error: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = BenchSettings(models=["student"], shapes=[args.shape], device="cuda")
    _, n_clips, subjects = synthetic_subjects(settings, device)[0]
    model, spec = subjects[0].model, subjects[0].spec
    flops = flops_per_query(model, spec, n_clips)
    one = random_batch(spec, n_clips, 1)
    nbytes = tensor_bytes({k: one[k] for k in INPUT_KEYS})
    ceilings = measure_gpu_ceilings(device)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "shape": args.shape,
        "n_clips": n_clips,
        "flops_per_query": flops,
        "bytes_per_query": nbytes,
        "ceilings": ceilings,
        "floors": floors(flops, nbytes, ceilings["bf16_matmul_flops"], ceilings["copy_bandwidth"]),
        "sweep": [],
        "profiles": [],
    }
    batches = [int(b) for b in args.batches.split(",")]
    compile_batches = [int(b) for b in args.compile_batches.split(",")]

    def sweep() -> None:
        for name in args.variants.split(","):
            sizes = compile_batches if "compile" in name else batches
            if "graph" in name:
                sizes = [b for b in sizes if b <= 4096]
            if "max-autotune" in name:
                sizes = sizes[-1:]  # autotuning takes minutes per shape: the largest batch only
            if late():
                cells = [{"variant": name, "batch": b, "error": "skipped: past --deadline"} for b in sizes]
            else:
                cells = sweep_variant(name, model, spec, n_clips, sizes, args.passes, device)
            result["sweep"] += cells
            for cell in cells:
                print(json.dumps({k: cell.get(k) for k in ("variant", "batch", "qps", "error")}), flush=True)
            save(out, result)

    def profiles() -> None:
        for item in filter(None, args.profile.split(",")):
            name, _, size = item.partition("@")
            try:
                if late():
                    raise TimeoutError("skipped: past --deadline")
                result["profiles"].append(profile_call(name, model, spec, n_clips, int(size), device))
            except Exception as err:  # noqa: BLE001
                result["profiles"].append({"variant": name, "batch": int(size), "error": repr(err)[:300]})
            print(
                json.dumps({k: v for k, v in result["profiles"][-1].items() if k != "table"})[:600],
                flush=True,
            )
            save(out, result)

    with torch.inference_mode():
        for part in (profiles, sweep) if args.profile_first else (sweep, profiles):
            part()
    print(save(out, result))
    return 0


def save(out: Path, result: dict[str, Any]) -> str:
    """Write gpu_profile.json and gpu_profile.md (atomically); return the markdown."""
    write_json(out / "gpu_profile.json", result)
    text = markdown(result)
    with atomic_open(out / "gpu_profile.md") as handle:
        handle.write(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
