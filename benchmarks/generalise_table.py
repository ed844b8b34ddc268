r"""One table over every benchmark of several `benchmarks/generalise.py` result folders.

    python benchmarks/generalise_table.py runs/bench/generalise runs/bench/gen-full runs/bench/gen-full2 \
        runs/bench/gen-small --models student student-none bigru --out runs/bench/generalise-all

Per benchmark: each model's test R1@0.5 (mean ± 95% CI over seeds) and its difference paired over
seeds against the first model (the folders' own `vs_first`, so the first model given here must be the
one each folder was run with first). Writes OUT/generalise_table.json and OUT/generalise_table.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emtm.io import write_json, write_markdown_table
from emtm.stats import ci_text, verdict


def collect(folders: list[Path], models: list[str]) -> dict[str, dict[str, dict]]:
    """benchmark -> model -> {"r1@0.5": mean_ci, "vs_first": paired difference or None}."""
    table: dict[str, dict[str, dict]] = {}
    for folder in folders:
        summary = json.loads((folder / "generalise.json").read_text())["summary"]
        for bench, entries in summary.items():
            if bench in table:
                raise SystemExit(f"{folder}: benchmark {bench!r} is in two of the folders given")
            missing = [m for m in models if m not in entries]
            if missing:
                raise SystemExit(
                    f"{folder / 'generalise.json'}: {bench} has no {missing} (it has {list(entries)})"
                )
            table[bench] = {
                m: {"r1@0.5": entries[m]["r1@0.5"], "vs_first": entries[m].get("vs_first", {}).get("r1@0.5")}
                for m in models
            }
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="generalise.py --out folders")
    ap.add_argument("--models", nargs="+", required=True, help="labels; the first is the reference")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    first, others = args.models[0], args.models[1:]
    table = collect(args.folders, args.models)
    rows = []
    for bench, entries in table.items():
        cells = [ci_text(entries[m]["r1@0.5"]) for m in args.models]
        for m in others:
            diff = entries[m]["vs_first"]
            cells.append(f"{ci_text(diff)} ({verdict(diff, m, first)})")
        rows.append([bench, *cells])
    header = ["benchmark", *(f"{m} R1@0.5" for m in args.models), *(f"{m} - {first}" for m in others)]
    write_json(args.out / "generalise_table.json", {"models": args.models, "table": table})
    title = "test R1@0.5, mean ± 95% CI over seeds; differences paired over seeds"
    write_markdown_table(args.out / "generalise_table.md", header, rows, title=title)
    print((args.out / "generalise_table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
