"""The aggregation study's table: every row of one or more `emtm ablate` folders (stable row keys), with
its paired R1@0.7 difference against the student alone, the best single teacher, and the calibrated and
plain means of the teachers (docs/RESULTS.md, "The aggregation on `pixels`, five seeds").

    python benchmarks/aggregation_summary.py runs/bench/distill-pixels/ablation5 \\
        runs/bench/distill-pixels/ablation5-single --json runs/bench/distill-pixels/aggregation5.json

With --pool the folders hold the same rows distilled from different teacher sets: each row's seeds are
pooled over the folders (seed s of folder i is "i:s"), and pairs are formed within a folder only.
Where the folders kept their test queries' IoUs (test_ious.json), each difference also gets a 95%
bootstrap interval over seeds and test queries, [lo, hi] (‡ when it excludes 0).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emtm.experiments.ablation_report import query_hits
from emtm.stats import ci_text, mean_ci, paired_bootstrap, paired_difference

ORDER = ["student", "gt-smooth", "BEST", "mean", "calibrated-mean", "fixed-best", "kau", "emtm", "emtm:fixed"]
REFERENCES = ["student", "BEST", "calibrated-mean", "mean"]


@dataclass
class Row:
    name: str
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)  # seed id -> test metrics
    where: dict[str, tuple[Path, str]] = field(default_factory=dict)  # seed id -> (folder, its seed)


def read_rows(folders: list[str], pool: bool = False) -> dict[str, Row]:
    """Row key -> Row; a later folder's row replaces an earlier one's unless `pool`, where the seeds of
    every folder are kept, tagged with the folder's index ("i:s")."""
    rows: dict[str, Row] = {}
    for i, folder in enumerate(folders):
        state = json.loads((Path(folder) / "ablation.json").read_text())
        for name, saved in state["rows"].items():
            row = rows.setdefault(saved["key"], Row(name))
            if not pool:
                row.seeds, row.where = {}, {}
            for seed, metrics in saved["seeds"].items():
                tag = f"{i}:{seed}" if pool else seed
                row.seeds[tag], row.where[tag] = metrics, (Path(folder), seed)
    return rows


def seed_order(seed: str) -> tuple[int, ...]:
    return tuple(int(part) for part in seed.split(":"))


def values(row: Row, metric: str, seeds: list[str]) -> list[float]:
    return [row.seeds[s][metric] for s in seeds]


def hits(row: Row, seeds: list[str]) -> np.ndarray | None:
    """(seeds, queries) test hits at IoU 0.7 of the row's runs, or None where one was not kept."""
    per_seed = [query_hits(row.where[s][0], row.name, [row.where[s][1]]) for s in seeds]
    if any(h is None for h in per_seed):
        return None
    if len({tuple(ids) for ids, _ in per_seed}) > 1:
        raise SystemExit(f"{row.name}: its seeds were tested on other queries")
    return np.concatenate([h for _, h in per_seed])


def difference(rows: dict[str, Row], key: str, ref: str) -> tuple[str, dict[str, Any] | None]:
    """'+m ± ci* (n=N)' of key − ref paired over the seeds both have, then '[lo, hi]‡', the bootstrap
    over those seeds and the test queries where their query IoUs were kept ('' with fewer than 2)."""
    if ref == key or ref not in rows:
        return "", None
    common = sorted(set(rows[key].seeds) & set(rows[ref].seeds), key=seed_order)
    if len(common) < 2:
        return "", None
    d = paired_difference(values(rows[key], "r1@0.7", common), values(rows[ref], "r1@0.7", common))
    star = "*" if d["ci"] is not None and abs(d["mean"]) > d["ci"] else ""
    text, stat = f"{d['mean']:+.2f} ± {d['ci']:.2f}{star} (n={len(common)})", {**d, "n": len(common)}
    a, b = hits(rows[key], common), hits(rows[ref], common)
    if a is not None and b is not None and a.shape == b.shape:
        boot = paired_bootstrap(a, b)
        text += f" [{boot['lo']:+.2f}, {boot['hi']:+.2f}]" + ("‡" if boot["excludes_zero"] else "")
        stat["bootstrap"] = boot
    return text, stat


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
        ordered = sorted(rows[key].seeds, key=seed_order)
        cells = [ci_text(mean_ci(values(rows[key], m, ordered))) for m in ("r1@0.5", "r1@0.7", "miou")]
        for ref in refs:
            text, stat = difference(rows, key, ref)
            cells.append(text)
            if stat:
                out.setdefault(key, {})[ref] = stat
        print(f"| {rows[key].name} | {len(ordered)} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
