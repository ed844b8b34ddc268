"""`emtm train` and `emtm evaluate`."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from emtm.cli.argtypes import nonneg_int, positive_int
from emtm.cli.options import add_train_options, run_config
from emtm.console import (
    METRIC_KEYS,
    metrics_row,
    print_sensitivity,
    print_table,
)
from emtm.errors import EmtmError

log = logging.getLogger("emtm")


def add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model (student, baselines, teachers) on a data.yaml")
    p.add_argument(
        "--fold",
        metavar="I/K",
        help="train without the train videos of fold I of K, for an out-of-fold teacher cache: train "
        "folds 0/K to K-1/K, then `emtm teachers export --run RUN0 ... RUNK-1`",
    )
    add_train_options(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from emtm.engine.distributed import is_main_process
    from emtm.engine.train import train

    cfg = run_config(args)
    result = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    if not is_main_process():  # torchrun: rank 0 reports
        return 0
    best = result["best"]
    print_table(
        f"{cfg.model}: best validation epoch {best['epoch']} of {cfg.optim.epochs} ({result['run_dir']})",
        ["split", *METRIC_KEYS, "queries"],
        [metrics_row("val", best, [best["n_queries"]])],
    )
    print(
        f"trainable parameters: {result['n_trainable']:,}; next: emtm evaluate --run {args.out} --split test"
    )
    return 0


def add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained run, or any prediction file, on a split; prints a table, writes JSON",
    )
    p.add_argument("--run", help="run directory written by emtm train, or a model folder (emtm export)")
    p.add_argument(
        "--preds",
        help="instead of --run: a prediction file (JSON lines: qid, vid, query, pred_relevant_windows; "
        "Moment-DETR / Lighthouse layout, e.g. from emtm predict --out); needs --data or --gt",
    )
    p.add_argument("--split", default="test", help="split of the data.yaml (train, val, test)")
    p.add_argument("--data", help="data.yaml to evaluate on (default for --run: the one it was trained on)")
    p.add_argument(
        "--gt",
        help="with --preds, instead of --data: the ground truth as a JSON-lines file (qid, query, vid, "
        "duration, relevant_windows), as the Moment-DETR / Lighthouse standalone evaluator takes it",
    )
    p.add_argument(
        "--seed",
        type=nonneg_int,
        default=0,
        help="--preds on val without a val split: seed of the held-out videos",
    )
    p.add_argument("--json", help="write the metrics here (flat keys in percent)")
    p.add_argument(
        "--protocol", choices=["raw", "quantized"], default="raw", help="IoU against raw or clip-quantised GT"
    )
    p.add_argument(
        "--weights", choices=["best", "last"], default="best", help="best-on-validation or last epoch"
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also report moments by length: relative to the video (< 1/3, 1/3-2/3, > 2/3) and in "
        "seconds as the Moment-DETR evaluator (<= 10, 10-30, 30-150 s)",
    )
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="with --run: does the model read the sentence? The share of videos whose queries get "
        "different top-1 moments, and the accuracy when each query is swapped for another of its video",
    )
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from emtm.engine.evaluate import RELATIVE_LABELS, SECONDS_LABELS, clipping_note
    from emtm.engine.scoring import score_file, score_model
    from emtm.io import write_json

    if bool(args.run) == bool(args.preds):
        raise EmtmError("give one of --run (score a model) and --preds (score a prediction file)")
    if args.gt and not args.preds:
        raise EmtmError("--gt FILE.jsonl is the ground truth of a prediction file: give --preds with it")
    if args.sensitivity and not args.run:
        raise EmtmError("--sensitivity asks the model again with swapped sentences: give --run")
    if args.preds:
        if bool(args.data) == bool(args.gt):
            raise EmtmError(
                "--preds needs the ground truth: --data D.yaml (and --split) or --gt FILE.jsonl, one of them"
            )
        name, metrics = score_file(
            args.preds, args.data, args.gt, args.split, args.protocol, args.seed, args.breakdown
        )
    else:
        name, metrics = score_model(
            args.run, args.data, args.split, args.protocol, args.weights, args.device, args.batch_size,
            not args.no_progress, args.breakdown, args.sensitivity, args.seed,
        )  # fmt: skip
    split = "gt" if args.gt else args.split

    def row(label: str, m: dict[str, Any]) -> list[Any]:
        return metrics_row(label, m, [m["map"], m["map@0.5"], m["map@0.75"], m["n_queries"]])

    rows = [row(split, metrics)]
    for key, labels in (("breakdown", RELATIVE_LABELS), ("breakdown_seconds", SECONDS_LABELS)):
        rows += [row(f"  {labels[k]}", v) for k, v in metrics.get(key, {}).items()]
    print_table(
        f"{name} on {args.gt or args.split} ({args.protocol} protocol)",
        ["split", *METRIC_KEYS, "map", "map@0.5", "map@0.75", "queries"],
        rows,
    )
    if clipping_note(metrics):
        print(clipping_note(metrics))
    if "sensitivity" in metrics:
        print_sensitivity(metrics["sensitivity"])
    if args.json:
        write_json(args.json, metrics)
        print(f"wrote {args.json}")
    return 0
