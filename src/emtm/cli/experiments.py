"""`emtm ablate`, `emtm recipe` and `emtm demo`: experiments over the library."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from emtm.cli.argtypes import positive_float, positive_int
from emtm.console import (
    print_table,
)

log = logging.getLogger("emtm")


def add_ablate(sub: Any) -> None:
    p = sub.add_parser(
        "ablate",
        help="the paper's ablation table over seeds (resumable; run the same command in several "
        "processes to train rows in parallel)",
    )
    p.add_argument("--data", required=True, help="data.yaml")
    p.add_argument(
        "--teachers",
        nargs="+",
        action="append",
        required=True,
        help="teacher caches (.h5); repeat --teachers for the same teachers trained with other seeds "
        "(same file names, e.g. s0/seqpan.h5 s0/proposals.h5 --teachers s1/seqpan.h5 s1/proposals.h5): "
        "seed s is distilled from set s mod n",
    )
    p.add_argument("--out", default="runs/ablation", help="folder for runs, ablation.json and ablation.md")
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=5,
        help="seeds per row (5: enough for a paired 95%% CI to mean something)",
    )
    p.add_argument(
        "--rows",
        help="row numbers to run, e.g. 1,3,5 (1 alone, 2 single teachers, 3 mean, 4 KAU, 5 full EMTM, "
        "and with the fixed held-out mixture in the KAU's place, emtm:fixed; 6 teacher count, 7 width; "
        "controls: 8 smoothed ground truth, 9 best global weights, 10 mean of --calibrated teachers; "
        "or row keys, e.g. emtm:fixed,fixed-best; default all)",
    )
    p.add_argument(
        "--calibrated",
        nargs="+",
        action="append",
        default=[],
        help="the same teachers' caches exported with calibration, for row 10 (calibrated mean); one "
        "--calibrated per --teachers set",
    )
    p.add_argument("--epochs", type=positive_int, default=20, help="epochs per run")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument(
        "--emtm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an EMTM model option for every distilled row, e.g. kd_weight=3.2 (repeat)",
    )
    p.add_argument("--threads", type=positive_int, help="CPU threads per process (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="RUN",
        help="a finished run (emtm train/distill) to evaluate instead of training a (row, seed) with the "
        "same config: data, model, options, teachers, optimiser and seed (repeat)",
    )
    p.set_defaults(func=cmd_ablate)


def cmd_ablate(args: argparse.Namespace) -> int:
    from emtm.config import apply_overrides
    from emtm.engine.signals import TrainingStopped
    from emtm.experiments.ablate import parse_rows, run_ablation
    from emtm.experiments.ablation_report import SUMMARY_COLUMNS, TABLE_TITLE, comparisons, summary_rows

    try:
        state, elsewhere = run_ablation(
            Path(args.data), args.teachers, Path(args.out), args.seeds, args.epochs, args.lr, args.device,
            parse_rows(args.rows), apply_overrides({}, args.emtm_option, "--emtm-option", "kd_weight=3.2"),
            threads=args.threads, reuse=[Path(r) for r in args.reuse], progress=not args.no_progress,
            calibrated=args.calibrated,
        )  # fmt: skip
    except TrainingStopped as stop:
        raise stop.rerun("emtm ablate") from None
    print_table(
        f"{TABLE_TITLE}; {args.seeds} seed(s) asked",
        SUMMARY_COLUMNS,
        summary_rows(state, comparisons(state, Path(args.out))),
    )
    print(
        f"wrote {Path(args.out) / 'ablation.md'}, ablation.json (finished rows are kept on re-run) and "
        "ablation_curves.png (validation R1@0.7 by epoch)"
    )
    if elsewhere:
        print(
            f"{len(elsewhere)} run(s) were being trained by another emtm ablate process on this folder "
            f"({'; '.join(elsewhere)}): run this command again once it is done for the full table"
        )
    return 0


def add_recipe(sub: Any) -> None:
    p = sub.add_parser(
        "recipe", help="a paper benchmark end to end: teachers, caches, EMTM, evaluation, report"
    )
    p.add_argument("recipe", help="charades-sta, activitynet, tacos, or a recipe .yaml")
    p.add_argument(
        "--features", required=True, help="{vid}.npy folder (VSLNet layout) or .h5 (2D-TAN layout)"
    )
    p.add_argument("--annotations", required=True, help="folder with the split files named in the recipe")
    p.add_argument("--word-vectors", default="glove-6b-50d", help="e.g. a path to glove.840B.300d.txt")
    p.add_argument("--out", default="runs/recipe", help="folder for every run, cache and the report")
    p.add_argument(
        "--epochs", type=positive_int, help="override the recipe's epochs (e.g. for a quick check)"
    )
    p.add_argument(
        "--teacher-folds",
        type=int,
        metavar="K",
        help="out-of-fold teacher caches: train each teacher also K times without one fold of the train "
        "videos, each caching the fold it did not see (K more teacher runs; default: the recipe's, 0)",
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.set_defaults(func=cmd_recipe)


def cmd_recipe(args: argparse.Namespace) -> int:
    from emtm.config import validate
    from emtm.engine.signals import TrainingStopped
    from emtm.experiments.recipe import Recipe, load_recipe, run_recipe

    recipe = load_recipe(args.recipe)
    if args.epochs is not None:
        recipe.optim.epochs = args.epochs
    if args.teacher_folds is not None:  # validated like the recipe's own teacher_folds
        recipe = validate(
            Recipe, {**recipe.model_dump(), "teacher_folds": args.teacher_folds}, "--teacher-folds"
        )
    try:
        features, annotations = Path(args.features), Path(args.annotations)
        run_recipe(recipe, annotations, features, args.word_vectors, Path(args.out), args.device)
    except TrainingStopped as stop:
        raise stop.rerun("emtm recipe") from None
    print(f"wrote {Path(args.out) / 'report.md'} (re-running resumes; finished steps are kept)")
    return 0


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job on built-in data: synth -> train -> evaluate -> table")
    p.add_argument("--out", default="runs/demo", help="where the demo's runs and results go")
    p.add_argument("--data-dir", help="where the built-in benchmark is written (default data/synth-PRESET)")
    p.add_argument(
        "--full",
        action="store_true",
        help="the full demo: three teachers at 8 epochs on the synthetic small preset (default: the quick "
        "one, two teachers at 6 epochs on the real-pixel small-pixels preset)",
    )
    p.add_argument(
        "--preset",
        help="built-in benchmark preset (default small-pixels, or small with --full; emtm synth --help)",
    )
    p.add_argument(
        "--epochs", type=positive_int, default=None, help="epochs for each model (default: the demo's)"
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from emtm.experiments.demo import run_demo

    data_dir = Path(args.data_dir) if args.data_dir else None
    run_demo(Path(args.out), preset=args.preset, epochs=args.epochs, data_dir=data_dir, full=args.full)
    return 0
