"""`emtm synth` and `emtm data stats`: build a benchmark, look at a feature store."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from emtm.cli.argtypes import nonneg_int, positive_int
from emtm.console import (
    print_table,
)
from emtm.errors import EmtmError

log = logging.getLogger("emtm")


def add_synth(sub: Any) -> None:
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
        "SynthConfig in emtm/data/synth/config.py); data.yaml records every knob",
    )
    p.set_defaults(func=cmd_synth)


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


def add_data(sub: Any) -> None:
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


def cmd_data_stats(args: argparse.Namespace) -> int:
    from emtm.data.stats import SHOWN, features_stats, input_advice, load_reference
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
    advice = input_advice(stats)
    if advice:
        print(advice)
    if args.json:
        write_json(
            Path(args.json),
            {
                "features": str(args.features),
                "stats": stats,
                "reference": {"name": label, "stats": reference},
                "advice": advice,
            },
        )
        print(f"wrote {args.json}")
    return 0
