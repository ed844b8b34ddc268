"""`emtm predict` (one video, or a whole split to a prediction file) and `emtm export`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from emtm.cli.argtypes import positive_float, positive_int
from emtm.console import (
    METRIC_KEYS,
    print_table,
    report_moments,
)
from emtm.errors import EmtmError

log = logging.getLogger("emtm")


def add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="ground sentences in one video's features, or every query of a split into a prediction file",
    )
    p.add_argument("--model", help="a model folder (emtm export) or a run directory")
    p.add_argument("--run", help="a run directory (emtm train/distill) or a model folder; same as --model")
    p.add_argument("--features", help="one video: its (T, D) clip features, .npy")
    p.add_argument(
        "--duration",
        type=positive_float,
        help="one video: its length in seconds (default: T x the model's clip length)",
    )
    p.add_argument("--query", action="append", help="one video: a sentence (repeat for several)")
    p.add_argument("--json", help="one video: also write the moments as JSON here ('-': to stdout)")
    p.add_argument("--data", help="a split: the data.yaml whose queries to predict")
    p.add_argument("--split", default="test", help="a split: which one (train, val, test)")
    p.add_argument(
        "--out",
        help="a split: the JSON-lines file to write (qid, vid, query, pred_relevant_windows); '-': stdout",
    )
    p.add_argument("--top-k", type=positive_int, default=None, help="moments per query (default: 5)")
    p.add_argument(
        "--long-video",
        choices=["auto", "window", "resample"],
        help="one video longer than the model's max_video_len clips: sliding windows (window) or mean-pool "
        "(resample); default auto = windows when the model records its clip length (docs/API.md)",
    )
    p.add_argument(
        "--window", type=positive_int, help="one video: clips per sliding window (default: max_video_len)"
    )
    p.add_argument(
        "--stride", type=positive_int, help="one video: clips between window starts (default: window / 2)"
    )
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="autocast for inference (fp16: CUDA only, the fast path measured in docs/BENCHMARKS.md)",
    )
    p.add_argument(
        "--cast",
        action="store_true",
        help="with --precision fp16/bf16: convert the weights and the features to it once instead of "
        "autocasting every call (with --compile, the fastest GPU path measured)",
    )
    p.add_argument(
        "--compile",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile the model with this mode (each new input shape compiles on its first call)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    if bool(args.run) == bool(args.model):
        raise EmtmError("give one of --model (an exported model folder or a run) and --run")
    if args.data:
        if args.long_video or args.window is not None or args.stride is not None:
            raise EmtmError("--long-video, --window and --stride apply to one video (--features), not --data")
        return predict_split(args)
    if not args.features or not args.query:
        raise EmtmError(
            "give --features F.npy and --query (one video), or --data D.yaml --out preds.jsonl (a split)"
        )
    import numpy as np

    from emtm.api import Grounder

    grounder = Grounder.load(args.model or args.run, args.device, args.precision, args.compile, args.cast)
    path = Path(args.features)
    if not path.exists():
        raise EmtmError(f"{path}: features file not found (expected a (T, D) .npy array)")
    try:
        features = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise EmtmError(f"{path}: not a plain .npy array ({err})") from None
    long_video = args.long_video or "auto"
    video = grounder.encode_video(features, args.duration, long_video, args.window, args.stride)
    results = video.ground_many(args.query, top_k=5 if args.top_k is None else args.top_k)
    if video.windows:
        w = video.prepared
        print(
            f"{path.name}: {w.n_clips} clips, grounded in {len(w.spans)} sliding windows of {w.window} clips "
            f"(stride {w.stride}), moments merged across windows with temporal NMS",
            file=sys.stderr if args.json == "-" else sys.stdout,
        )
    report_moments(str(path), video.duration, args.query, results, args.json)
    return 0


def predict_split(args: argparse.Namespace) -> int:
    """Every query of a split of --data to a Moment-DETR / Lighthouse JSON-lines file."""
    from emtm.device import resolve_device
    from emtm.engine import speed
    from emtm.engine.model_dir import load_model
    from emtm.engine.predictions import predict_file

    if not args.out:
        raise EmtmError("--data needs --out preds.jsonl: where to write one line per query")
    if args.features or args.query:
        raise EmtmError("--features/--query ground one video; leave them out with --data (a whole split)")
    import contextlib
    import shutil
    import tempfile

    device = resolve_device(args.device)
    run = load_model(args.model or args.run, device)
    precision = speed.prepare_inference(run.model, args.precision, device, args.cast, args.compile)
    with contextlib.ExitStack() as stack:
        out = args.out
        if out == "-":  # the lines to stdout, everything else to stderr
            out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "preds.jsonl"
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        with speed.autocast(precision, device):
            summary = predict_file(
                run, args.data, args.split, out, device, args.top_k, args.batch_size, not args.no_progress
            )
        print_table(
            f"predictions of {args.model or args.run} on {args.split}",
            ["split", "queries", "videos", "top-k", "file"],
            [[args.split, summary["n_queries"], summary["n_videos"], summary["top_k"], args.out]],
        )
        if args.out == "-":
            with open(out, encoding="utf-8") as lines:
                shutil.copyfileobj(lines, sys.__stdout__)
            sys.__stdout__.flush()
        else:
            print(f"next: emtm evaluate --preds {args.out} --data {args.data} --split {args.split}")
    return 0


def add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a self-contained model folder of a run (of a distilled run, its student; of any other, "
        "its own model): safetensors, config, vocab, card",
    )
    p.add_argument("--run", required=True, help="run directory (emtm train, or emtm distill: its student)")
    p.add_argument("--out", required=True, help="model folder to write, e.g. models/emtm-charades")
    p.add_argument(
        "--test-metrics", help="`emtm evaluate --json` file for the card (default: RUN/test.json if present)"
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from emtm.engine.export import export_model
    from emtm.engine.model_dir import CONFIG
    from emtm.engine.model_dir import METRIC_KEYS as EXPORT_KEYS

    out = export_model(args.run, args.out, args.test_metrics)
    config = json.loads((out / CONFIG).read_text(encoding="utf-8"))
    files = [[name, rec["bytes"], rec["sha256"][:16]] for name, rec in config["files"].items()]
    files += [[name, (out / name).stat().st_size, ""] for name in (CONFIG, "README.md")]
    print_table(f"model folder {out} ({config['architecture']['name']})", ["file", "bytes", "sha256"], files)
    if config["metrics"]:
        rows = [[split, *[m[k] for k in EXPORT_KEYS]] for split, m in config["metrics"].items()]
        print_table("metrics recorded in the model card (%)", ["split", *METRIC_KEYS, "queries"], rows)
    print(f"use it: emtm predict --model {out} --data D.yaml --split test --out preds.jsonl")
    return 0
