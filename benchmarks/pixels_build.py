r"""How long the real-pixel benchmark takes to build: a first build into an empty cache, then a second one.

    python benchmarks/pixels_build.py --preset small-pixels --out runs/bench/pixels-build
    python benchmarks/pixels_build.py --preset pixels --out runs/bench/pixels-build --threads 2

Each build runs `emtm synth --preset P` in its own process (so the cache, not memory, carries over), with a
fresh cache folder under --out for the first build. Writes build.json and build.md: wall seconds of each
build, the videos and queries, the query kinds per split and the feature statistics of the built store
(`emtm.data.stats`), beside the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from emtm.io import write_json, write_markdown_table


def build(preset: str, out: Path, cache: Path, threads: int | None) -> float:
    cmd = [
        sys.executable,
        "-m",
        "emtm",
        "synth",
        "--preset",
        preset,
        "--out",
        str(out),
        "--cache",
        str(cache),
    ]
    cmd += ["--device", "cpu", *(["--threads", str(threads)] if threads else [])]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small-pixels", choices=["small-pixels", "pixels"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/pixels-build"))
    parser.add_argument("--threads", type=int, help="torch threads for extraction (default: torch's)")
    args = parser.parse_args()
    root = args.out / args.preset
    cache = root / "cache"
    shutil.rmtree(root, ignore_errors=True)
    first = build(args.preset, root / "data", cache, args.threads)
    second = build(args.preset, root / "data-again", cache, args.threads)
    queries = json.loads((root / "data" / "queries.json").read_text())
    index = json.loads((root / "data" / "features" / "features.json").read_text())
    from emtm.data.features import open_feature_store
    from emtm.data.stats import store_stats

    stats = store_stats(open_feature_store(root / "data" / "features"))
    result = {
        "preset": args.preset,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "first_build_s": round(first, 1),
        "second_build_s": round(second, 1),
        "videos": len(index["videos"]),
        "queries": len(queries["queries"]),
        "kind_shares": queries["kind_shares"],
        "feature_stats": stats,
    }
    write_json(args.out / f"{args.preset}.json", result)
    rows = [
        [args.preset, result["videos"], result["queries"], result["first_build_s"], result["second_build_s"]]
    ]
    columns = ["preset", "videos", "queries", "first build (s)", "second build (s)"]
    write_markdown_table(args.out / f"{args.preset}.md", columns, rows, f"build time, {result['machine']}")
    print(json.dumps({k: v for k, v in result.items() if k != "feature_stats"}, indent=2))


if __name__ == "__main__":
    main()
