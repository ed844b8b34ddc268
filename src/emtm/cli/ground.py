"""`emtm ground`: one video file and sentences in, moments out: extract the features the model was
trained on (its recorded backbone, fps and clip length), then ground with `emtm.api.Grounder`."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from emtm.cli.argtypes import positive_int
from emtm.console import report_moments
from emtm.errors import EmtmError
from emtm.extract.ground import check_backbone, feature_spec


def add_parser(sub: Any) -> None:
    """Register `emtm ground` on the CLI's subparsers."""
    p = sub.add_parser(
        "ground",
        help="extract a video's features as the model was trained on them, then ground sentences in it",
    )
    p.add_argument("--model", required=True, help="a model folder (emtm export) or a run directory")
    p.add_argument("--video", required=True, help="a video file (.mp4, .avi, .mkv, ...)")
    p.add_argument("--query", action="append", required=True, help="a sentence (repeat for several)")
    p.add_argument("--top-k", type=positive_int, default=5, help="moments per sentence (default 5)")
    p.add_argument("--json", help="also write the moments as JSON here ('-': to stdout)")
    p.add_argument(
        "--backbone",
        help="only for a backbone that its recorded name cannot rebuild (a Python factory returning its "
        "own Backbone): the spec to build it with; its name must equal the model's",
    )
    p.add_argument("--weights", help="the backbone's local weights, when it was built with --weights")
    p.add_argument("--batch-size", type=positive_int, default=32, help="frames per backbone call")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.set_defaults(func=cmd_ground)


def cmd_ground(args: argparse.Namespace) -> int:
    from emtm.api import Grounder
    from emtm.extract.backbones import build_backbone
    from emtm.extract.extractor import extract_one

    grounder = Grounder.load(args.model, device=args.device)
    recorded, fps, clip_seconds = feature_spec(grounder.config, args.model)
    if not (math.isfinite(fps) and clip_seconds * fps >= 1 - 1e-6):
        raise EmtmError(f"{args.model}: recorded fps {fps} and clip seconds {clip_seconds} do not fit")
    backbone = build_backbone(args.backbone or recorded, args.weights, grounder.device)
    check_backbone(backbone, recorded, grounder.feature_dim, args.model)
    features, info = extract_one(Path(args.video), backbone, fps, clip_seconds, args.batch_size)
    video = grounder.encode_video(features, info.duration)
    results = video.ground_many(args.query, top_k=args.top_k)
    print(
        f"{args.video}: {info.duration:.2f} s, {features.shape[0]} clips of {clip_seconds:g} s, "
        f"{recorded} features",
        file=sys.stderr if args.json == "-" else sys.stdout,
    )
    report_moments(args.video, info.duration, args.query, results, args.json)
    return 0
