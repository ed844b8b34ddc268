"""Raw video -> features -> training -> grounding at full size: EfficientNet-Lite0 at its 224 px input.

    .venv/bin/python benchmarks/video_e2e.py --out runs/video_e2e        # about 5 min on 2 CPU cores

Generates videos in which a red square, a blue circle and a green triangle each appear for 2-5 s at
random times (one query each, "a red square appears."), extracts their features (`emtm extract`'s
code), trains the prior baseline and the student, and scores both on the held-out videos; as a control,
the student is also scored with each test video given another test video's features. The small version
of this runs in CI: tests/test_video_e2e.py.
"""

from __future__ import annotations

import argparse
import platform

import torch

from emtm.console import METRIC_KEYS, metrics_row, print_table
from emtm.io import write_json, write_markdown_table
from shapes_e2e import run_shapes_check


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/video_e2e")
    p.add_argument("--videos", type=int, default=60, help="generated videos (a quarter held out for test)")
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--image-size", type=int, default=224, help="backbone input (EfficientNet-Lite0: 224)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    args = p.parse_args()

    report = run_shapes_check(
        args.out,
        n_videos=args.videos,
        fps=args.fps,
        image_size=args.image_size,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        progress=True,
    )
    device = "CUDA" if report["device"] == "cuda" else "CPU"
    machine = f"{device} {platform.machine()}, {torch.get_num_threads()} threads"
    title = (
        f"{args.videos} generated videos ({report['frames']} frames), {report['backbone']} at "
        f"{args.image_size} px, {args.fps:g} fps; test split, {report['student']['n_queries']} queries; "
        f"{machine}"
    )
    rows = [
        metrics_row(name, report[key], [report[key]["n_queries"]])
        for name, key in (
            ("prior", "prior"),
            ("student", "student"),
            ("student, shuffled video features", "student_shuffled"),
        )
    ]
    columns = ["model", *METRIC_KEYS, "queries"]
    print_table(title, columns, rows)
    print("seconds:", ", ".join(f"{k} {v}" for k, v in report["timings"].items()))
    write_json(f"{args.out}/report.json", {**report, "machine": machine, "args": vars(args)})
    write_markdown_table(f"{args.out}/report.md", columns, rows, title=title)
    print(f"wrote {args.out}/report.json and {args.out}/report.md")


if __name__ == "__main__":
    main()
