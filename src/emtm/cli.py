"""Command line: parse, call the library, print a table. No logic of its own."""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emtm import __version__
from emtm.argtypes import nonneg_int, positive_float, positive_int
from emtm.errors import EmtmError
from emtm.io import check_writable

if TYPE_CHECKING:
    from emtm.config import TrainConfig

METRIC_KEYS = ("r1@0.3", "r1@0.5", "r1@0.7", "r5@0.3", "r5@0.5", "r5@0.7", "miou")

log = logging.getLogger("emtm")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row])
    Console(width=max(100, 12 * len(columns) + 20)).print(table)


def metrics_row(name: str, metrics: dict[str, Any], extra: list[Any] | None = None) -> list[Any]:
    return [name, *[metrics[k] for k in METRIC_KEYS], *(extra or [])]


# ---------------------------------------------------------------------------------------------- synth
def cmd_synth(args: argparse.Namespace) -> int:
    from emtm.config import apply_overrides
    from emtm.data import synth

    if args.annotations and args.set:
        raise EmtmError(
            "--set changes a preset's knobs; with --annotations only --feature-dim and --seed apply"
        )
    if args.annotations:
        if args.format == "charades_sta" and not args.durations:
            beside = sorted(Path(args.annotations[0]).parent.glob("*durations*.json"))
            if not beside:
                raise EmtmError("charades_sta needs durations: pass --durations FILE (JSON or Charades CSV)")
            args.durations = str(beside[0])
            print(f"using durations from {args.durations}")
        yaml_path = synth.synthesize_features_for_annotations(
            args.annotations,
            args.format,
            args.out,
            durations=args.durations,
            feature_dim=256 if args.feature_dim is None else args.feature_dim,
            seed=args.seed,
            feature_format=args.feature_format,
        )
    else:
        from emtm.extract.pixel_benchmark import generate_preset

        overrides = apply_overrides({"seed": args.seed}, args.set, "--set", "noise_std=0.25")
        if args.feature_dim is not None:
            overrides["feature_dim"] = args.feature_dim
        yaml_path = generate_preset(
            args.preset,
            args.out,
            overrides,
            feature_format=args.feature_format,
            images=args.images,
            cache=args.cache,
            device=args.device,
            threads=args.threads,
        )
    summarize_dataset(yaml_path)
    print_prior(yaml_path)
    return 0


def print_prior(yaml_path: Path) -> None:
    """The moment prior's test metrics (and, on the pixel benchmark, the share of each query kind)."""
    from emtm.config import load_data_config
    from emtm.data.dataset import load_splits
    from emtm.engine.metrics import prior_metrics

    cfg = load_data_config(yaml_path)
    splits = load_splits(cfg, seed=0, names=tuple(cfg.splits))
    if "train" in splits and "test" in splits:
        metrics = prior_metrics(splits["train"].samples, splits["test"].samples)
        print_table(
            f"prior baseline (mean training moment) on the test split, {metrics['n_queries']} queries",
            ["model", "r1@0.3", "r1@0.5", "r1@0.7", "miou"],
            [["prior", *(metrics[k] for k in ("r1@0.3", "r1@0.5", "r1@0.7", "miou"))]],
        )
    queries = Path(yaml_path).parent / "queries.json"
    if queries.exists():
        import json

        shares = json.loads(queries.read_text())["kind_shares"]
        kinds = list(next(iter(shares.values())))
        print_table(
            "query kinds (% of each split)", ["split", *kinds], [[s, *v.values()] for s, v in shares.items()]
        )


def summarize_dataset(yaml_path: Path) -> None:
    from emtm.config import load_data_config
    from emtm.data.dataset import load_splits

    cfg = load_data_config(yaml_path)
    rows = []
    for name, split in load_splits(cfg, seed=0, names=tuple(cfg.splits)).items():
        samples = split.samples
        n = max(len(samples), 1)
        rows.append(
            [
                name,
                len(samples),
                len({s.video_id for s in samples}),
                sum(s.duration for s in samples) / n,
                sum(s.end - s.start for s in samples) / n,
                sum(len(s.sentence.split()) for s in samples) / n,
            ]
        )
    print_table(
        f"dataset {yaml_path}",
        ["split", "queries", "videos", "avg video (s)", "avg moment (s)", "avg words"],
        rows,
    )


# ---------------------------------------------------------------------------------------------- train
def add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data.yaml describing the dataset")
    p.add_argument(
        "--model",
        default=None,
        help="student (default), the baselines prior, meanpool and bigru, "
        "or a teacher: seqpan, eamat, tan2d, proposals, regress",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--config", help="YAML/JSON file with a TrainConfig (sections model_options, optim, eval, run)"
    )
    p.add_argument("--epochs", type=positive_int, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, help="queries per batch")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (AdamW)")
    p.add_argument("--seed", type=nonneg_int, help="random seed (data order, init, dropout, val hold-out)")
    p.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], help="where to train (auto: CUDA if available)"
    )
    p.add_argument("--workers", type=nonneg_int, help="data-loader worker processes")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last complete checkpoint (end of an epoch, every "
        "run.checkpoint_every steps, or where SIGINT/SIGTERM stopped it); its saved settings hold, and "
        "a flag that contradicts them is an error",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (without it, trained work there is never overwritten)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value, e.g. --set optim.warmup_epochs=2 --set model_options.d=64",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    from emtm.config import TrainConfig, apply_overrides, read_mapping, validate

    raw: dict[str, Any] = read_mapping(Path(args.config)) if args.config else {}
    raw["data"] = str(Path(args.data).resolve())
    if args.model:
        raw["model"] = args.model
    flags = {
        "optim.epochs": args.epochs,
        "optim.batch_size": args.batch_size,
        "optim.lr": args.lr,
        "run.seed": args.seed,
        "run.device": args.device,
        "run.num_workers": args.workers,
    }
    for key, value in flags.items():
        if value is not None:
            section, name = key.split(".")
            raw.setdefault(section, {})[name] = value
    if args.no_progress:
        raw.setdefault("run", {})["progress"] = False
    if getattr(args, "fold", None):
        raw["fold"] = parse_fold(args.fold)
    raw = apply_overrides(raw, args.set)
    cfg = validate(TrainConfig, raw, "training config")
    from emtm.models.registry import model_config

    cfg.model_options = model_config(cfg.model, cfg.model_options).model_dump()
    return cfg


def parse_fold(text: str) -> tuple[int, int]:
    """--fold I/K as (I, K); the range is checked by TrainConfig."""
    index, sep, k = text.partition("/")
    if not (sep and index.strip().isdigit() and k.strip().isdigit()):
        raise EmtmError(
            f"--fold {text!r}: expected I/K, the fold to leave out and the number of folds, e.g. 0/5"
        )
    return int(index), int(k)


def run_config(args: argparse.Namespace) -> TrainConfig:
    """The config of a new run (from the options), or of the run being resumed (from its config.json)."""
    from emtm.config import TrainConfig, validate
    from emtm.engine.train import load_json

    if not args.resume:
        return train_config_from_args(args)
    config_path = Path(args.out) / "config.json"
    if not config_path.exists():
        if (Path(args.out) / "last_state.pt").exists():
            raise EmtmError(
                f"--resume: {args.out} holds last_state.pt but no config.json (written when a run starts), "
                "so its settings are unknown; start the run again without --resume in an empty folder"
            )
        raise EmtmError(f"--resume: {config_path} not found; nothing to resume in {args.out}")
    saved = validate(TrainConfig, load_json(config_path)["train"], str(config_path))
    differences = resume_differences(args, saved)
    if differences:
        raise EmtmError(
            f"--resume continues {args.out} with the settings it was started with ({config_path}), but "
            f"these flags say otherwise: {'; '.join(differences)}. Drop them to resume, or start a new "
            "run with --overwrite or another --out"
        )
    return saved


# Settings a resumed run may change: where and how it runs, not what it trains.
RESUMABLE_RUN_FIELDS = ("device", "num_workers", "progress", "threads", "checkpoint_every", "dist_timeout_s")


def resume_differences(args: argparse.Namespace, saved: Any) -> list[str]:
    """The flags of a --resume command line that contradict the saved config, as 'key: saved X, given Y'."""
    from emtm.config import apply_overrides, read_mapping

    before = saved.model_dump(mode="json")
    after = copy.deepcopy(before)
    if getattr(args, "data", None):
        after["data"] = str(Path(args.data).resolve())
    if getattr(args, "model", None):
        after["model"] = args.model
    if getattr(args, "config", None):
        for section, values in read_mapping(Path(args.config)).items():
            if isinstance(values, dict) and isinstance(after.get(section), dict):
                after[section].update(values)
            else:
                after[section] = values
    flags = {"optim.epochs": args.epochs, "optim.batch_size": args.batch_size, "optim.lr": args.lr,
             "run.seed": args.seed}  # fmt: skip
    for key, value in flags.items():
        if value is not None:
            section, name = key.split(".")
            after[section][name] = value
    after = apply_overrides(after, getattr(args, "set", []) or [])

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        return {k: v for key, value in d.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    old, new = flat(before), flat(after)
    return [
        f"{key.rstrip('.')}: saved {old.get(key)!r}, given {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and key.rstrip(".") not in {f"run.{f}" for f in RESUMABLE_RUN_FIELDS}
    ]


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


# ---------------------------------------------------------------------------------------------- distill
def cmd_distill(args: argparse.Namespace) -> int:
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
        args.model = "emtm"
        args.set = [f"model_options.n_teachers={len(args.teachers)}", *args.set]
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
    from emtm.distill.show import kau_summary

    summary = kau_summary(Path(args.out), device=resolve_device(cfg.run.device))
    if summary is not None:
        print_kau_summary(summary)
    print(f"student-only run (no teacher branch, no KAU): {student_dir}")
    print(f"next: emtm evaluate --run {student_dir} --split test")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from emtm.config import apply_overrides
    from emtm.engine.signals import TrainingStopped
    from emtm.experiments.ablate import SUMMARY_COLUMNS, parse_rows, run_ablation, summary_rows

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
        f"ablation, test split, {args.seeds} seed(s): mean ± 95% CI; paired differences (* excludes 0)",
        SUMMARY_COLUMNS,
        summary_rows(state),
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


def cmd_show(args: argparse.Namespace) -> int:
    from emtm.device import resolve_device
    from emtm.distill.show import TeacherView, show_query
    from emtm.engine.checkpoint import load_run
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


def print_kau_summary(summary: dict[str, Any]) -> None:
    """The table of TeacherView.summary: how the KAU weighs the teachers, against a per-query oracle."""
    from emtm.stats import verdict

    rows = [
        [
            t["teacher"],
            f"{t['weight_start']:.3f} / {t['weight_end']:.3f}",
            f"{t['weight_std']:.3f}",
            f"{100 * t['kau_top_share']:.1f}%",
            f"{100 * t['oracle_share']:.1f}%",
            f"{t['hard_loss']:.3f}",
        ]
        for t in summary["teachers"]
    ]
    rows += [
        [f"mix: {name}", "", "", "", "", f"{v:.3f}"] for name, v in summary["ensemble_hard_loss"].items()
    ]
    print_table(
        f"KAU weights over {summary['n_queries']} {summary['split']} queries; its top pick is the oracle's "
        f"on {100 * summary['kau_agrees_with_oracle']:.1f}% of the boundaries; hard loss: lower is better",
        ["teacher", "weight start / end", "std (queries)", "KAU's top pick", "oracle's pick", "hard loss"],
        rows,
    )
    versus = summary.get("kau_minus", {})
    if versus:
        print_table(
            "the KAU's hard loss minus each mixture's, paired over the queries (negative: the KAU is better)",
            ["mixture", "KAU - mixture", "95% CI", "verdict"],
            [
                [name, f"{d['mean']:+.3f}", f"± {d['ci'] or 0:.3f}", verdict(d, "the mixture", "the KAU")]
                for name, d in versus.items()
            ],
        )


def cmd_teachers(args: argparse.Namespace) -> int:
    from emtm.distill.cache import TeacherCache, export_teacher, import_outputs

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


# ---------------------------------------------------------------------------------------------- evaluate
def print_sensitivity(sens: dict[str, Any]) -> None:
    """The two query-sensitivity figures of `emtm evaluate --sensitivity`, as one table."""

    def share(key: str) -> str:
        return "n/a" if sens[key] is None else f"{sens[key]:.1f}%"

    rows = [
        ["videos with >= 2 queries", sens["n_videos"]],
        ["... whose queries get more than one top-1 moment", share("distinct_top1_share")],
        ["... whose queries each get their own top-1 moment", share("all_distinct_share")],
    ]
    if sens.get("n_swapped"):
        rows.append(["queries asked again with another sentence of their video", sens["n_swapped"]])
        for key in ("r1@0.5", "r1@0.7", "miou"):
            rows.append([
                f"{key}: own sentence -> swapped (drop)",
                f"{sens[f'own_{key}']:.2f} -> {sens[f'swapped_{key}']:.2f} ({sens[f'drop_{key}']:+.2f})",
            ])  # fmt: skip
    print_table("does the model read the sentence? (a model that listens loses accuracy when swapped)",
                ["measure", "value"], rows)  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> int:
    from emtm.engine.evaluate import RELATIVE_LABELS, SECONDS_LABELS, clipping_note, evaluation_report
    from emtm.io import write_json

    if bool(args.run) == bool(args.preds):
        raise EmtmError("give one of --run (score a model) and --preds (score a prediction file)")
    if args.gt and not args.preds:
        raise EmtmError("--gt FILE.jsonl is the ground truth of a prediction file: give --preds with it")
    if args.sensitivity and not args.run:
        raise EmtmError("--sensitivity asks the model again with swapped sentences: give --run")
    if args.preds:
        from emtm.engine.predictions import read_predictions

        if bool(args.data) == bool(args.gt):
            raise EmtmError(
                "--preds needs the ground truth: --data D.yaml (and --split) or --gt FILE.jsonl, one of them"
            )
        preds = read_predictions(args.preds, args.data, args.split, args.protocol, args.seed, args.gt)
        truth = {"gt": str(args.gt)} if args.gt else {"data": str(args.data)}
        name, source = Path(args.preds).name, {"preds": str(args.preds), **truth}
    else:
        from emtm.data.dataset import split_dataset
        from emtm.device import resolve_device
        from emtm.engine.checkpoint import load_run
        from emtm.engine.evaluate import predict_dataset
        from emtm.engine.export import is_model_dir, load_model_dir

        device = resolve_device(args.device)
        weights = "last.safetensors" if args.weights == "last" else "model.safetensors"
        if is_model_dir(args.run):
            run = load_model_dir(args.run, device)
        else:
            run = load_run(args.run, weights, device)
        if not (args.data or run.cfg.data):
            raise EmtmError(f"{args.run} is an exported model: give --data D.yaml to evaluate it on")
        dataset = split_dataset(
            args.data or run.cfg.data, args.split, run.vocab, run.cfg.run.seed, run.cfg.fold
        )
        eval_cfg = run.cfg.eval.model_copy(update={"protocol": args.protocol})
        preds = predict_dataset(
            run.model, dataset, eval_cfg, device, args.batch_size, progress=not args.no_progress
        )
        name, source = run.cfg.model, {"run": str(args.run), "model": run.cfg.model}
    metrics = evaluation_report(preds, args.protocol, args.breakdown)
    if args.sensitivity:
        from emtm.engine.sensitivity import query_sensitivity

        metrics["sensitivity"] = query_sensitivity(
            run.model, dataset, preds, eval_cfg, device, args.batch_size, args.seed
        )
    metrics.update(split=args.split, **source)
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


# ---------------------------------------------------------------------------------------------- predict
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


def report_moments(
    source: str, duration: float, queries: list[str], results: list, json_out: str | None
) -> None:
    """One table of ranked moments per query; with `json_out`, the same as JSON (to stdout for "-",
    the tables then going to stderr)."""
    import contextlib
    import json

    from emtm.io import write_json

    record = {"source": source, "duration": duration, "queries": []}
    to_stderr = contextlib.redirect_stdout(sys.stderr) if json_out == "-" else contextlib.nullcontext()
    with to_stderr:
        for query, moments in zip(queries, results):
            moments = moments if isinstance(moments, list) else [moments]
            print_table(
                f"{query!r} in {Path(source).name} ({duration:.1f} s)",
                ["rank", "start (s)", "end (s)", "score"],
                [[i + 1, m.start, m.end, m.score] for i, m in enumerate(moments)],
            )
            record["queries"].append(
                {
                    "query": query,
                    "moments": [{"start": m.start, "end": m.end, "score": m.score} for m in moments],
                }
            )
    if json_out == "-":
        print(json.dumps(record, allow_nan=False))
    elif json_out:
        write_json(json_out, record)
        print(f"wrote {json_out}")


def predict_split(args: argparse.Namespace) -> int:
    """Every query of a split of --data to a Moment-DETR / Lighthouse JSON-lines file."""
    from emtm.device import resolve_device
    from emtm.engine import speed
    from emtm.engine.export import load_model
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


# ---------------------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    import json

    from emtm.engine.export import CONFIG, export_model
    from emtm.engine.export import METRIC_KEYS as EXPORT_KEYS

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


# ---------------------------------------------------------------------------------------------- data
def cmd_data_stats(args: argparse.Namespace) -> int:
    from emtm.data.stats import SHOWN, features_stats, load_reference
    from emtm.io import write_json

    stats = features_stats(args.features, args.max_videos)
    label, reference = load_reference(args.reference)

    def cell(stats: dict[str, Any], key: str) -> str:
        value = stats.get(key)
        return "-" if value is None else f"{value:.4f}"

    print_table(
        f"{args.features}: {stats['videos']} video(s), {stats['rows']} clips of {stats['dim']} values",
        ["statistic", "these features", f"reference: {label}"],
        [[name, cell(stats, key), cell(reference, key)] for key, name in SHOWN.items()],
    )
    if args.json:
        write_json(
            Path(args.json),
            {
                "features": str(args.features),
                "stats": stats,
                "reference": {"name": label, "stats": reference},
            },
        )
        print(f"wrote {args.json}")
    return 0


def add_data_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="look at a feature store: emtm data stats")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser(
        "stats",
        help="mean, std, share of zeros and negatives, row L2, adjacent and random-pair cosine of a feature "
        "store, beside a reference (definitions: emtm.data.stats)",
    )
    q.add_argument("--features", required=True, help="a folder of {vid}.npy, an .h5/.hdf5 file, or one .npy")
    q.add_argument(
        "--reference",
        help="a file name of ../shared/data/real-features/stats.json (default: its I3D rgb fixture, or a "
        "built-in copy of its numbers without that folder), a stats .json (e.g. from --json), or features",
    )
    q.add_argument(
        "--max-videos", type=positive_int, help="only the first N videos (sorted ids); default all"
    )
    q.add_argument("--json", help="write both sets of statistics here")
    q.set_defaults(func=cmd_data_stats)


# ---------------------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from emtm.experiments.demo import run_demo

    data_dir = Path(args.data_dir) if args.data_dir else None
    run_demo(Path(args.out), preset=args.preset, epochs=args.epochs, data_dir=data_dir, full=args.full)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emtm",
        description="Fast temporal sentence grounding in videos with multi-teacher knowledge distillation.",
    )
    parser.add_argument("--version", action="version", version=f"emtm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth", help="write the built-in synthetic benchmark (or features for real annotations)"
    )
    p.add_argument(
        "--preset",
        default="default",
        help="tiny, small, default (Charades-STA size); harder: small-relational, relational (repeated "
        "events), small-hard, hard (every video repeats an event, more distractors), small-hard-i3d, "
        "hard-i3d (the same with features shaped like real I3D ones); unseen (a held-out shift: I3D-like, "
        "512-d, longer videos and moments, never used to choose defaults); real pixels: "
        "small-pixels, pixels (Fashion-MNIST photographs in H.264 videos, features by `emtm extract`)",
    )
    p.add_argument(
        "--images",
        help="pixel presets: folder of the four Fashion-MNIST idx files (default: Debian's "
        "dataset-fashion-mnist, /usr/share/datasets/fashion-mnist)",
    )
    p.add_argument(
        "--cache",
        help="pixel presets: where videos and features are cached by config hash "
        "(default $EMTM_CACHE/pixels or ~/.cache/emtm/pixels)",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default="auto",
        help="pixel presets: where extraction runs",
    )
    p.add_argument("--threads", type=positive_int, help="pixel presets: torch threads for extraction")
    p.add_argument("--out", default="data/synth", help="output folder (gets data.yaml)")
    p.add_argument(
        "--seed", type=nonneg_int, default=0, help="random seed; the same seed gives the same bytes"
    )
    p.add_argument("--feature-dim", type=positive_int, help="feature dimension D (default: the preset's)")
    p.add_argument(
        "--feature-format", choices=["npy", "h5"], default="npy", help="npy folder or one HDF5 file"
    )
    p.add_argument(
        "--annotations",
        action="append",
        help="real annotation file(s) to synthesise features for (repeat for train/val/test)",
    )
    p.add_argument(
        "--format",
        default="charades_sta",
        help="format of --annotations: charades_sta, activitynet, tacos, jsonl",
    )
    p.add_argument("--durations", help="durations file for charades_sta (JSON or Charades_v1_*.csv)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="change one knob of the preset, e.g. noise_std=0.25 or repeat_share=0.8 (repeat; the knobs: "
        "SynthConfig in emtm/data/synth.py); data.yaml records every knob",
    )
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a model (student, baselines, teachers) on a data.yaml")
    p.add_argument(
        "--fold",
        metavar="I/K",
        help="train without the train videos of fold I of K, for an out-of-fold teacher cache: train "
        "folds 0/K to K-1/K, then `emtm teachers export --run RUN0 ... RUNK-1`",
    )
    add_train_options(p)
    p.set_defaults(func=cmd_train)

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
    p.set_defaults(func=cmd_distill)

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

    p = sub.add_parser(
        "ablate",
        help="the paper's ablation table over seeds (resumable; run the same command in several "
        "processes to train rows in parallel)",
    )
    p.add_argument("--data", required=True, help="data.yaml")
    p.add_argument("--teachers", nargs="+", required=True, help="teacher caches (.h5)")
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
        "6 teacher count, 7 width; controls: 8 smoothed ground truth, 9 best global weights, 10 mean of "
        "--calibrated teachers; default all)",
    )
    p.add_argument(
        "--calibrated",
        nargs="+",
        default=[],
        help="the same teachers' caches exported with calibration, for row 10 (calibrated mean)",
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

    add_data_parser(sub)

    from emtm.experiments.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)

    from emtm.extract.cli import add_parser as add_extract_parser

    add_extract_parser(sub)

    from emtm.extract.ground import add_parser as add_ground_parser

    add_ground_parser(sub)

    from emtm.serve.cli import add_parser as add_serve_parser  # argparse only; FastAPI loads in the command

    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        for flag in ("out", "json"):  # an unwritable output fails now, not after the work
            value = getattr(args, flag, None)
            if isinstance(value, str) and value != "-":
                check_writable(value, f"--{flag}")
        return args.func(args)
    except EmtmError as err:
        code = getattr(err, "exit_code", 2)  # 128 + signal when SIGINT/SIGTERM stopped training cleanly
        print(f"emtm {args.command}: {'error: ' if code == 2 else ''}{err}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"emtm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
