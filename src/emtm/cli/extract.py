"""`emtm extract`: videos in, a features folder (one .npy per video + features.json) out."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from emtm.cli.argtypes import positive_float, positive_int
from emtm.errors import EmtmError


def add_parser(sub: Any) -> None:
    """Register `emtm extract` on the CLI's subparsers."""
    p = sub.add_parser(
        "extract",
        help="decode videos, sample frames, run a frame backbone, pool into clips: {vid}.npy + features.json",
    )
    p.add_argument(
        "--videos",
        nargs="+",
        required=True,
        help="video files and/or folders (their .mp4/.avi/.mkv/... files)",
    )
    p.add_argument(
        "--out", required=True, help="features folder to write; usable as `features:` in a data.yaml"
    )
    p.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        help="efficientnet-lite0 (built in, 1280-d), torchvision:NAME or timm:NAME (with --weights), or a "
        "Python factory module:function or file.py:function (docs/VIDEO.md)",
    )
    p.add_argument("--weights", help="local weights for the backbone (.safetensors, or .pth/.pt state dict)")
    p.add_argument("--fps", type=positive_float, default=1.0, help="frames sampled per second (default 1)")
    p.add_argument(
        "--clip-seconds",
        type=positive_float,
        help="seconds per feature row; sampled frames are averaged (default 1/fps)",
    )
    p.add_argument(
        "--image-size", type=positive_int, help="backbone input size in pixels (default: the backbone's, 224)"
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="frames per backbone call")
    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for the backbone (default: torch's choice, one per core); on a busy machine fewer "
        "can be faster: docs/VIDEO.md, threads",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], default="auto", help="auto: CUDA if available"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="extract every video again, even those already in --out"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    import torch

    from emtm.console import print_table
    from emtm.device import num_threads, resolve_device
    from emtm.extract.backbones import build_backbone
    from emtm.extract.extractor import FEATURES_JSON, extract_videos

    device = resolve_device(args.device)
    with num_threads(args.threads):  # restored afterwards
        threads = torch.get_num_threads()
        backbone = build_backbone(args.backbone, args.weights, device, args.image_size)
        results = extract_videos(
            args.videos,
            args.out,
            backbone,
            fps=args.fps,
            clip_seconds=args.clip_seconds,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    rows = []
    for r in results:
        rec = r.record
        rows.append(
            [
                r.video_id,
                r.status,
                rec.get("frames", ""),
                rec.get("clips", ""),
                rec.get("duration", ""),
                round(r.seconds, 2) if r.status == "done" else "",
            ]
        )
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    clip = args.clip_seconds or 1 / args.fps
    print_table(
        f"{backbone.name} ({backbone.dim}-d), {args.fps:g} fps, {clip:g} s clips, {device}, "
        f"{threads} threads",
        ["video", "status", "frames", "clips", "duration (s)", "time (s)"],
        rows,
    )
    print(
        f"{counts['done']} done, {counts['skipped']} skipped (already in {args.out}), "
        f"{counts['failed']} failed; index: {args.out}/{FEATURES_JSON}"
    )
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"failed: {r.error}", file=sys.stderr)
    if failed:
        raise EmtmError(
            f"{len(failed)} of {len(results)} videos failed (errors above); the others are saved, and a "
            "second run skips them: fix or remove the failed files and run the same command again"
        )
    return 0
