"""The aggregation study's table: every row of one or more `emtm ablate` folders (stable row keys), with
its paired R1@0.7 difference against the student alone, the best single teacher, and the calibrated and
plain means of the teachers (docs/RESULTS.md, "The aggregation on `pixels`, five seeds").

    python benchmarks/aggregation_summary.py runs/bench/distill-pixels/ablation5 \\
        runs/bench/distill-pixels/ablation5-single --json runs/bench/distill-pixels/aggregation5.json

With --pool the folders hold the same rows distilled from different teacher sets: each row's seeds are
pooled over the folders (seed s of folder i is "i:s"), and pairs are formed within a folder only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emtm.stats import ci_text, mean_ci, paired_difference

ORDER = ["student", "gt-smooth", "BEST", "mean", "calibrated-mean", "fixed-best", "kau", "emtm", "emtm:fixed"]
REFERENCES = ["student", "BEST", "calibrated-mean", "mean"]


def read_rows(folders: list[str], pool: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
    """Row key -> (row name, {seed id: metrics}); a later folder's row replaces an earlier one's unless
    `pool`, where the seeds of every folder are kept, tagged with the folder's index ("i:s")."""
    rows: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, folder in enumerate(folders):
        state = json.loads((Path(folder) / "ablation.json").read_text())
        for name, row in state["rows"].items():
            if not pool:
                rows[row["key"]] = (name, row["seeds"])
                continue
            seeds = rows.setdefault(row["key"], (name, {}))[1]
            seeds.update({f"{i}:{s}": metrics for s, metrics in row["seeds"].items()})
    return rows


def seed_order(seed: str) -> tuple[int, ...]:
    return tuple(int(part) for part in seed.split(":"))


def values(rows: dict[str, Any], key: str, metric: str, seeds: list[str]) -> list[float]:
    return [rows[key][1][s][metric] for s in seeds]


def difference(rows: dict[str, Any], key: str, ref: str) -> tuple[str, dict[str, Any] | None]:
    """'+m ± ci* (n=N)' of key − ref paired over the seeds both have ('' when fewer than 2)."""
    if ref == key or ref not in rows:
        return "", None
    common = sorted(set(rows[key][1]) & set(rows[ref][1]), key=seed_order)
    if len(common) < 2:
        return "", None
    d = paired_difference(values(rows, key, "r1@0.7", common), values(rows, ref, "r1@0.7", common))
    star = "*" if d["ci"] is not None and abs(d["mean"]) > d["ci"] else ""
    return f"{d['mean']:+.2f} ± {d['ci']:.2f}{star} (n={len(common)})", {**d, "n": len(common)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="emtm ablate --out folders")
    p.add_argument("--best-single", default="single:seqpan", help="row key of the best single teacher")
    p.add_argument(
        "--against",
        nargs="+",
        default=REFERENCES,
        help="row keys to pair every row with (BEST: --best-single)",
    )
    p.add_argument(
        "--pool",
        action="store_true",
        help="the folders are the same rows on different teacher sets: pool their seeds",
    )
    p.add_argument("--json", help="write the paired differences here")
    args = p.parse_args()
    rows = read_rows(args.folders, args.pool)
    refs = [args.best_single if r == "BEST" else r for r in args.against]
    header = ["row", "seeds", "R1@0.5", "R1@0.7", "mIoU", *(f"R1@0.7 − {r}" for r in refs)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    out: dict[str, Any] = {}
    for key in [args.best_single if k == "BEST" else k for k in ORDER]:
        if key not in rows:
            continue
        name, seeds = rows[key]
        ordered = sorted(seeds, key=seed_order)
        cells = [ci_text(mean_ci(values(rows, key, m, ordered))) for m in ("r1@0.5", "r1@0.7", "miou")]
        for ref in refs:
            text, stat = difference(rows, key, ref)
            cells.append(text)
            if stat:
                out.setdefault(key, {})[ref] = stat
        print(f"| {name} | {len(ordered)} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
