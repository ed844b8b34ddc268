"""The real output of `emtm.Grounder` on a generated clip that no model saw in training.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grounder_clip.py --out runs/grounder_clip   # ~30 s, CPU

Trains a student on 120 generated coloured-shape videos with EfficientNet-Lite0 features at 64 px
(benchmarks/shapes_e2e.py, as tests/test_video_e2e.py with 3x the videos; the CI size, 40
videos and 15 epochs, gives a weaker student). Then it writes one new clip with known events
(benchmarks/shape_videos.py), extracts its features with the backbone, fps and clip length the model
records, and grounds a few sentences with the Grounder API, printing each answer next to the truth.
docs/VIDEO.md shows this output. With `--screenshot PNG` it also serves the student and the clip with
`emtm serve`, grounds one sentence on the page in Debian's chromium (playwright) and saves the page.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

import serve_child
from emtm import Grounder
from emtm.extract import build_backbone, extract_videos
from shape_videos import ShapeEvent, write_video
from shapes_e2e import run_shapes_check

# The clip: 11 s, events at times chosen here (not drawn from the training distribution's seed).
DURATION = 11.0
EVENTS = [
    ShapeEvent("red", "square", 0.8, 3.9, 0.28, 0.28),
    ShapeEvent("green", "triangle", 3.4, 7.2, 0.72, 0.28),
    ShapeEvent("blue", "circle", 6.6, 10.4, 0.72, 0.72),
]


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/grounder_clip")
    p.add_argument("--videos", type=int, default=120, help="generated training videos (a quarter held out)")
    p.add_argument("--image-size", type=int, default=64, help="backbone input px (full size: 224)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--screenshot", help="also save a screenshot of `emtm serve`'s page grounding the clip")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()
    out = Path(args.out)

    report = run_shapes_check(
        out, args.videos, image_size=args.image_size, epochs=args.epochs, seed=args.seed, device="cpu"
    )
    miou = {model: f"{report[model]['miou']:.2f}" for model in ("student", "prior")}
    print(
        f"{args.videos} generated videos, a quarter held out; test mIoU: student {miou['student']}, "
        f"prior {miou['prior']}; CPU {platform.machine()}, {torch.get_num_threads()} threads"
    )

    clip = write_video(out / "clip" / "clip.mp4", EVENTS, DURATION, size=64, fps=10)

    # --- what a user writes ---------------------------------------------------------------------------
    g = Grounder.load(out / "student", device="cpu")
    spec = g.config["features"]  # the backbone, fps and clip length the model was trained on
    backbone = build_backbone(spec["backbone"])
    folder = out / "clip" / "features"
    (result,) = extract_videos([clip], folder, backbone, spec["fps"], spec["clip_seconds"], progress=False)
    features = np.load(folder / "clip.npy")
    duration = result.record["duration"]
    print(f"{clip.name}: {duration:g} s, features {features.shape} ({spec['backbone']}, {spec['fps']:g} fps)")
    print(f">>> g = Grounder.load({str(out / 'student')!r})")
    for event in EVENTS:
        moments = g.ground(features, event.sentence, duration=duration, top_k=3)
        truth = (event.start, event.end)
        print(f">>> g.ground(features, {event.sentence!r}, duration={duration:g}, top_k=3)")
        print(f"[{', '.join(repr(m) for m in moments)}]")
        top1 = iou((moments[0].start, moments[0].end), truth)
        print(f"    truth {truth[0]:.2f}-{truth[1]:.2f} s, top-1 IoU {top1:.2f}")
    if args.screenshot:
        screenshot(out, Path(args.screenshot), args.chromium, EVENTS[1].sentence)


def screenshot(out: Path, png: Path, chromium: str, query: str) -> None:
    """`emtm serve` the student and the clip (H.264, which chromium plays), ground `query` on the page."""
    from playwright.sync_api import sync_playwright

    videos = out / "serve_videos"
    write_video(videos / "clip.mp4", EVENTS, DURATION, size=96, fps=10, codec="libx264")
    args = ["--model", str(out / "student"), "--videos", str(videos), "--cache", str(out / "serve_cache")]
    with serve_child.serving(args, out / "serve.log", wait_s=90, threads=1) as served:
        url = served.url
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(out / "chromium-profile"), executable_path=chromium, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
                viewport={"width": 900, "height": 1000},
            )  # fmt: skip
            try:
                page = browser.new_page()
                page.goto(url + "/")
                page.wait_for_selector("body[data-ready='1']", timeout=30_000)
                page.select_option("#video-select", "video:clip.mp4")
                page.fill("#query", query)
                page.fill("#top-k", "3")
                page.click("#submit")
                page.wait_for_selector("body[data-state='done']", timeout=90_000)
                player = "document.getElementById('player')"
                page.wait_for_function(f"{player}.readyState >= 1", timeout=30_000)
                page.click("#best-moment")  # seek the video to the moment's start
                page.wait_for_function(f"(p => !p.seeking && p.readyState >= 2)({player})")
                page.wait_for_timeout(1000)  # chromium's loading spinner fades out
                png.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(png), full_page=True)
                print(f"{png}: the page, {query!r} -> {page.inner_text('#best')}")
            finally:
                browser.close()


if __name__ == "__main__":
    main()
