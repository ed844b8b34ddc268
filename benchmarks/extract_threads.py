r"""`emtm extract --threads N`: wall time of extracting the same generated videos at each thread count.

Writes `--videos` clips of coloured shapes (benchmarks/shape_videos.py), then runs `emtm extract` with the
built-in EfficientNet-Lite0 at 1 fps once per thread count into a fresh folder, and prints seconds.

    .venv/bin/python benchmarks/extract_threads.py --videos 16 --threads 1 2 --out runs/bench/extract-threads
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from emtm.cli import main as emtm
from shape_videos import ShapeEvent, write_video


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each video")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="runs/bench/extract-threads")
    args = parser.parse_args()
    out = Path(args.out)
    videos = out / "videos"
    for i in range(args.videos):
        if not (videos / f"v{i}.mp4").exists():
            event = ShapeEvent("red", "square", 1.0 + i % 5, 6.0 + i % 5)
            write_video(videos / f"v{i}.mp4", [event], duration=args.seconds, size=96, fps=10)
    seconds = {}
    for n in args.threads:
        features = out / f"features-{n}"
        shutil.rmtree(features, ignore_errors=True)
        start = time.perf_counter()
        command = ["extract", "--videos", str(videos), "--out", str(features), "--fps", "1"]
        code = emtm([*command, "--threads", str(n), "--device", "cpu", "--no-progress"])
        seconds[n] = round(time.perf_counter() - start, 2)
        assert code == 0
    print(json.dumps({"videos": args.videos, "seconds per video file": args.seconds, "wall s": seconds}))


if __name__ == "__main__":
    main()
