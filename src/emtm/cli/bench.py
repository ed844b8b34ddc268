"""`emtm bench`: the command's options, and its JSON, markdown and summary table."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from emtm.cli.argtypes import nonneg_int, positive_int
from emtm.errors import ConfigError

if TYPE_CHECKING:
    from emtm.experiments.bench.runner import BenchSettings

MODELS_HELP = "comma list: student, seqpan, eamat, tan2d, proposals, regress, meanpool, prior (default: all)"
TABLE_COLUMNS = [
    "model",
    "shape (L)",
    "variant",
    "device",
    "params M (trainable / total)",
    "GFLOPs/query",
    "latency p50 ms",
    "latency p90 ms",
    "queries/s @ batch",
    "peak MiB (batch 1 / batch)",
    "TE / VE / fusion / pred / ALL ms",
    "x student FLOPs",
    "x student p50",
    "x student q/s",
    "same span, max rel. prob err",
]


def add_parser(sub: Any) -> None:
    """Register `emtm bench` on the CLI's subparsers."""
    p = sub.add_parser(
        "bench", help="FLOPs, params, latency, throughput, memory and time split of every model, side by side"
    )
    add_options(p)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--md", help="write the table here (markdown)")
    p.set_defaults(func=cmd_bench)


def add_options(p: argparse.ArgumentParser) -> None:
    """Every option of `emtm bench` except where it writes (shared with benchmarks/bench.py)."""
    p.add_argument("--models", default=None, help=MODELS_HELP)
    p.add_argument(
        "--shapes",
        default="charades",
        help="comma list: tiny (L=16), charades (64), anet (100), tacos (256); a --run has its own L",
    )
    p.add_argument("--run", action="append", default=[], help="a trained run directory (repeat); its own L")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads for the rows (default: torch's current count)"
    )
    p.add_argument(
        "--runs", type=positive_int, default=100, help="timed batch-1 calls per row, after the warm-up"
    )
    p.add_argument("--warmup", type=nonneg_int, default=10, help="untimed batch-1 calls first")
    p.add_argument("--batch", type=positive_int, help="throughput batch (default: 64 on CPU, 1024 on CUDA)")
    p.add_argument("--throughput-reps", type=positive_int, default=5, help="timed throughput passes per row")
    p.add_argument("--words", type=positive_int, default=8, help="words per query")
    p.add_argument("--video-dim", type=positive_int, default=1024, help="clip feature size D")
    p.add_argument(
        "--variants",
        default="auto",
        help="student variants, each a row checked against eager fp32: auto (CPU: the other thread count, "
        "bf16, cached, onnx; CUDA: bf16, compile modes, graph, cached), all (auto + compile on CPU), none, "
        "or a comma list of e.g. threads=2, bf16, compile, bf16+compile:max-autotune, graph, onnx, cached",
    )
    p.add_argument(
        "--check-queries", type=positive_int, default=256, help="queries each variant is checked on"
    )
    p.add_argument("--limits", action="store_true", help="add the student's compute and memory floors")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--no-progress", action="store_true")


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    from emtm.experiments.bench.runner import DEFAULT_MODELS, BenchSettings

    for name in ("runs", "throughput_reps", "words", "video_dim", "check_queries"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.run and args.models:
        raise ConfigError("--run benches trained runs; leave out --models (or bench them in another call)")
    return BenchSettings(
        models=_split(args.models) or list(DEFAULT_MODELS),
        shapes=_split(args.shapes),
        device=args.device,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        batch=args.batch,
        throughput_reps=args.throughput_reps,
        words=args.words,
        video_dim=args.video_dim,
        variants=args.variants,
        check_queries=args.check_queries,
        seed=args.seed,
        run_dirs=args.run,
        limits=args.limits,
        progress=not args.no_progress,
    )


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def table_row(row: dict[str, Any]) -> list[str]:
    """One markdown row of a result row (see TABLE_COLUMNS)."""
    lat, mem, split, vs, agree = (
        row["latency_ms"] or {},
        row["peak_memory_mib"] or {},
        row["split_ms"],
        row["vs_student"] or {},
        row["agreement"],
    )
    split_text = "-"
    if split:
        split_text = " / ".join(_num(split[k]) for k in ("text", "video", "fusion", "prediction", "total"))
    agree_text = "-"
    if agree:
        below = "" if agree["ok"] else " (below 99%)"
        agree_text = f"{100 * agree['same_span']:.1f}%{below}, {agree['max_rel_prob_err']:.1e}"
    variant = row["variant"] if not row["error"] else f"{row['variant']} (error: {row['error']})"
    return [
        row["model"],
        f"{row['shape']} ({row['n_clips']})",
        variant,
        row["device"],
        f"{row['params_trainable'] / 1e6:.3f} / {row['params_total'] / 1e6:.3f}",
        f"{row['gflops']:.3f}",
        _num(lat.get("p50"), ".3f"),
        _num(lat.get("p90"), ".3f"),
        f"{_num(row['throughput_qps'], '.0f')} @ {row['batch']}",
        f"{_num(mem.get('batch1'), '.1f')} / {_num(mem.get('batchN'), '.1f')}",
        split_text,
        _num(vs.get("flops"), ".2f"),
        _num(vs.get("latency_p50"), ".2f"),
        _num(vs.get("throughput"), ".2f"),
        agree_text,
    ]


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in result["rows"]:
        full = table_row(row)
        rows.append([full[0], full[1], full[2][:60], full[5], full[6], full[8], full[13], full[14]])
    return rows


def cmd_bench(args: argparse.Namespace) -> int:
    from emtm.console import print_table
    from emtm.experiments.bench.limits import limits_line
    from emtm.experiments.bench.runner import run_bench
    from emtm.io import write_json, write_markdown_table

    result = run_bench(settings_from_args(args))
    title = (
        f"emtm bench on {result['device']}, torch {result['torch']}: latency over "
        f"{result['settings']['runs']} calls at batch 1, throughput at batch {result['settings']['batch']}"
    )
    print_table(
        title,
        ["model", "shape (L)", "variant", "GFLOPs", "p50 ms", "queries/s", "x student q/s", "agreement"],
        summary_rows(result),
    )
    for shape, limits in result.get("limits", {}).items():
        print(limits_line(shape, limits))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.md:
        write_markdown_table(args.md, TABLE_COLUMNS, [table_row(r) for r in result["rows"]], title)
        print(f"wrote {args.md}")
    if any(r["error"] for r in result["rows"]):
        print("some rows could not run; their error is in the variant column and the JSON")
    return 0
