"""Speed of every model, side by side: `emtm bench` with its results written under --out.

    OMP_NUM_THREADS=1 python benchmarks/bench.py --out runs/bench/speed --shapes charades,anet,tacos --limits
    python benchmarks/bench.py --out runs/bench/speed-gpu --device cuda --shapes charades

Writes bench.json and bench.md in --out; every option of `emtm bench` works here (see emtm bench -h).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emtm.cli.bench import add_options, cmd_bench
from emtm.errors import EmtmError


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench/speed", help="folder for bench.json and bench.md")
    add_options(p)
    args = p.parse_args()
    out = Path(args.out)
    args.json, args.md = str(out / "bench.json"), str(out / "bench.md")
    try:
        return cmd_bench(args)
    except EmtmError as err:
        print(f"bench.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
