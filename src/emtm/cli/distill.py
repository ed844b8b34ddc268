"""`emtm distill`, `emtm teachers` (export, import) and `emtm show`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from emtm.cli.argtypes import positive_float
from emtm.cli.options import add_train_options, run_config
from emtm.console import (
    METRIC_KEYS,
    metrics_row,
    print_kau_summary,
    print_table,
)
from emtm.errors import EmtmError

log = logging.getLogger("emtm")


def add_distill(sub: Any) -> None:
    p = sub.add_parser("distill", help="EMTM: distil cached teachers into the student (KAU + shared encoder)")
    add_train_options(p)
    p.add_argument("--teachers", nargs="+", default=[], help="teacher caches (.h5) from `emtm teachers`")
    p.add_argument(
        "--kau-teachers",
        nargs="+",
        default=[],
        help="cross-fitting: the same teachers' out-of-fold caches (emtm train --fold, emtm teachers "
        "export --run RUN0 ... RUNK-1), in the same order: the KAU learns its weights on them, the KD "
        "targets stay the --teachers caches",
    )
    p.add_argument(
        "--aggregator",
        choices=["kau", "fixed", "mean"],
        default="kau",
        help="what weighs the teachers: kau (the paper's Knowledge Aggregation Unit, per query), fixed "
        "(one global weight per teacher and boundary, fitted on the held-out validation queries when "
        "training starts), mean (equal weights); docs/RESULTS.md compares them",
    )
    p.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    from emtm.distill.model import AGGREGATORS
    from emtm.engine.checkpoint import export_student
    from emtm.engine.distributed import is_main_process
    from emtm.engine.train import train

    if not args.resume:
        missing = [t for t in args.teachers if not Path(t).exists()]
        if missing:
            raise EmtmError(f"teacher cache(s) not found: {missing}; build them with `emtm teachers export`")
        resolved = [Path(t).resolve() for t in args.teachers]
        twice = sorted({str(t) for t in resolved if resolved.count(t) > 1})
        if twice:
            log.warning("the same teacher cache is given twice: %s; the KAU weighs it as two teachers", twice)
        if not args.teachers:
            log.warning(
                "emtm distill without --teachers: the student learns from the isomorphic teacher alone (no "
                "cached teacher, no KAU); build caches with `emtm teachers export`"
            )
        if not args.teachers and args.aggregator != "kau":
            raise EmtmError(f"--aggregator {args.aggregator} weighs cached teachers: give --teachers")
        if args.kau_teachers and args.aggregator != "kau":
            raise EmtmError(f"--kau-teachers train the KAU; --aggregator {args.aggregator} has none")
        args.model = "emtm"
        chosen = [f"model_options.{k}={v}" for k, v in AGGREGATORS[args.aggregator].items()]
        args.set = [f"model_options.n_teachers={len(args.teachers)}", *chosen, *args.set]  # --set wins
    cfg = run_config(args)
    if not args.resume:
        cfg.teachers = [str(Path(t).resolve()) for t in args.teachers]
        cfg.kau_teachers = [str(Path(t).resolve()) for t in args.kau_teachers]
        if cfg.kau_teachers and len(cfg.kau_teachers) != len(cfg.teachers):
            raise EmtmError(
                f"--kau-teachers gives {len(cfg.kau_teachers)} cache(s) for {len(cfg.teachers)} --teachers: "
                "one out-of-fold cache per teacher, in the same order"
            )
    result = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    if not is_main_process():  # torchrun: rank 0 exports and reports
        return 0
    student_dir = export_student(Path(args.out))
    best = result["best"]
    print_table(
        f"EMTM student distilled from {len(cfg.teachers)} teacher(s): best validation epoch {best['epoch']}",
        ["split", *METRIC_KEYS, "queries"],
        [metrics_row("val", best, [best["n_queries"]])],
    )
    from emtm.device import resolve_device
    from emtm.experiments.show import kau_summary

    summary = kau_summary(Path(args.out), device=resolve_device(cfg.run.device))
    if summary is not None:
        print_kau_summary(summary)
    print(f"student-only run (no teacher branch, no KAU): {student_dir}")
    print(f"next: emtm evaluate --run {student_dir} --split test")
    return 0


def add_teachers(sub: Any) -> None:
    p = sub.add_parser(
        "teachers", help="build teacher caches: export a trained run, or import outside outputs"
    )
    p.add_argument("action", choices=["export", "import"])
    p.add_argument("--data", required=True, help="data.yaml of the dataset to distil on")
    p.add_argument("--split", default="train", help="split to cache (distillation uses train)")
    p.add_argument("--out", help="cache file to write (.h5)")
    p.add_argument(
        "--run",
        nargs="+",
        help="export: the teacher's run directory, or the K runs of `emtm train --fold I/K` (I = 0..K-1) "
        "for an out-of-fold cache of the train split",
    )
    p.add_argument(
        "--format", choices=["span", "2dmap", "proposals", "regression"], help="import: output form"
    )
    p.add_argument(
        "--in", dest="input", help="import: .npz or .jsonl file (layouts: emtm.distill.cache docs)"
    )
    p.add_argument("--name", help="import: teacher name recorded in the cache")
    p.add_argument(
        "--temperature",
        type=positive_float,
        help="softmax temperature of span and 2D-map teachers (default: fitted on held-out queries on "
        "export, or with --calibrate-on on import; else 1)",
    )
    p.add_argument(
        "--sigma",
        type=positive_float,
        help="Gaussian width of proposal and regression teachers, a fraction of the video (default: "
        "fitted as --temperature; else 0.05)",
    )
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="export: do not fit the temperature or sigma on the run's validation queries (T = 1, 0.05)",
    )
    p.add_argument(
        "--calibrate-on",
        help="import: the same teacher's outputs on held-out queries (same format), to fit its "
        "temperature or sigma on",
    )
    p.add_argument(
        "--calibrate-split", default="val", help="import: the split whose queries --calibrate-on holds"
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], default="auto", help="export: where the teacher runs"
    )
    p.add_argument("--no-progress", action="store_true", help="export: no progress bar")
    p.set_defaults(func=cmd_teachers)


def cmd_teachers(args: argparse.Namespace) -> int:
    from emtm.distill.cache import TeacherCache, import_outputs
    from emtm.engine.teachers import export_teacher

    if args.action == "export":
        if not args.run:
            raise EmtmError("emtm teachers export needs --run: the trained teacher's run directory")
        path = export_teacher(
            args.run, args.data, args.split, args.out, temperature=args.temperature, sigma_frac=args.sigma,
            device=args.device, progress=not args.no_progress, calibrate=not args.no_calibrate,
        )  # fmt: skip
    else:
        path = import_outputs(
            args.format, args.input, args.data, args.split, args.out, teacher_name=args.name,
            temperature=args.temperature, sigma_frac=args.sigma, calibrate_on=args.calibrate_on,
            calibrate_split=args.calibrate_split,
        )  # fmt: skip
    with TeacherCache(path) as cache:
        meta = cache.meta
        print_table(
            f"teacher cache {path}",
            ["teacher", "form", "split", "queries", "temperature", "sigma", "out-of-fold", "source"],
            [
                [
                    meta.teacher, meta.output_form, meta.split, len(cache), f"{meta.temperature:.3g}",
                    f"{meta.sigma_frac:.3g}", f"{meta.folds} folds" if meta.folds else "no", meta.source,
                ]
            ],
        )  # fmt: skip
    if meta.calibration:
        c = meta.calibration
        print(
            f"calibrated on {c['n_queries']} held-out {c['split']} queries: {c['parameter']} = "
            f"{c['value']:.3g}, hard loss {c['held_out_loss']:.3f} (at the default: {c['default_loss']:.3f})"
        )
    return 0


def add_show(sub: Any) -> None:
    p = sub.add_parser(
        "show",
        help="draw one query: teachers, KAU weights, ensemble, student (or the KAU's weights over a split)",
    )
    p.add_argument("--run", required=True, help="a run written by emtm distill")
    p.add_argument(
        "--sample-id",
        help="the query's sample_id (e.g. VIDEO_0); without it: a table of how the KAU weighs the teachers "
        "over the whole split, against a per-query oracle",
    )
    p.add_argument("--out", help="PNG to write (default query.png); without --sample-id: a JSON of the table")
    p.add_argument("--data", help="data.yaml (default: the run's)")
    p.add_argument(
        "--split",
        default="train",
        help="the split (default train; val: the validation queries held out of train, with its caches)",
    )
    p.add_argument(
        "--teachers", nargs="+", help="caches exported on --split, in the run's order (default: its own)"
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    from emtm.device import resolve_device
    from emtm.engine.checkpoint import load_run
    from emtm.experiments.show import TeacherView, show_query
    from emtm.io import write_json

    device = resolve_device(args.device)
    if args.sample_id:
        path = show_query(
            args.run, args.sample_id, args.out or "query.png", args.data, args.split, args.teachers, device
        )
        print(f"wrote {path}")
        return 0
    run = load_run(args.run, device=device)
    summary = TeacherView(run, args.data, args.split, args.teachers).summary()
    print_kau_summary(summary)
    if args.out:
        write_json(Path(args.out), summary)
        print(f"wrote {args.out}")
    return 0
