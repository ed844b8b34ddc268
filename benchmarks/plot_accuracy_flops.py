r"""Accuracy against FLOPs per query (the paper's Figure 1(b)): R1@0.7 vs GFLOPs, log x, one point per model.

    python benchmarks/plot_accuracy_flops.py --bench runs/bench/speed/bench.json \
        --results runs/recipe/report.json --results runs/ablation/ablation_summary.json --out fig.png
    python benchmarks/plot_accuracy_flops.py --results points.json --out fig.png

Each --results file may be:
* a list of points: [{"model": "student", "r1@0.7": 42.6, "gflops": 0.096}, ...];
* `emtm ablate`'s ablation_summary.json ({row: {"r1@0.7": {"mean", "std"}, "gflops"}}) or ablation.json;
* `emtm recipe`'s report.json ({name: {"r1@0.7", "gflops", ...}});
* `emtm evaluate --json` output ({"model", "run", "r1@0.7", ...}) or benchmarks/foundation.py's
  results.json ({"models": {name: {"r1@0.7", ...}}}).
A point without its own GFLOPs takes them from the --bench JSON (`emtm bench`): the row of the same run
directory, else the eager row of the same model name at --shape.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from emtm.errors import EmtmError
from emtm.io import atomic_path

METRIC = "r1@0.7"


def _metric(entry: dict[str, Any]) -> tuple[float, float] | None:
    value = entry.get(METRIC)
    if isinstance(value, dict):
        return float(value["mean"]), float(value.get("std") or 0.0)
    return (float(value), 0.0) if isinstance(value, int | float) else None


def points_from(data: Any, source: str) -> list[dict[str, Any]]:
    """Normalise one results file into points {model, r1, std, gflops or None, run}."""
    if isinstance(data, list):
        entries = {str(e.get("model", f"point {i}")): e for i, e in enumerate(data)}
    elif isinstance(data, dict) and isinstance(data.get("rows"), dict):  # ablation.json state
        from emtm.experiments.ablation_report import summarise

        entries = {name: summarise(r) for name, r in data["rows"].items() if r.get("seeds")}
    elif isinstance(data, dict) and isinstance(data.get("models"), dict):  # foundation / demo results
        entries = data["models"]
    elif isinstance(data, dict) and METRIC in data:  # one `emtm evaluate --json`
        entries = {str(data.get("model", Path(source).stem)): data}
    elif isinstance(data, dict):
        entries = {k: v for k, v in data.items() if isinstance(v, dict)}
    else:
        raise EmtmError(f"{source}: expected a list of points or a results object, got {type(data).__name__}")
    points = []
    for name, entry in entries.items():
        metric = _metric(entry)
        if metric is None:
            raise EmtmError(f"{source}: entry {name!r} has no {METRIC!r}; expected e.g. {{'{METRIC}': 42.6}}")
        gflops = entry.get("gflops")
        points.append(
            {
                "model": name,
                "registry_name": entry.get("model") if isinstance(entry.get("model"), str) else name,
                "r1": metric[0],
                "std": metric[1],
                "gflops": float(gflops) if gflops is not None else None,
                "run": entry.get("run"),
            }
        )
    return points


def fill_gflops(points: list[dict[str, Any]], bench: dict[str, Any] | None, shape: str) -> None:
    """GFLOPs of points that lack them, from an `emtm bench` JSON (same run dir, else same model)."""
    rows = [r for r in (bench or {}).get("rows", []) if r.get("variant") == "eager"]
    for point in points:
        if point["gflops"] is not None:
            continue
        match = None
        if point["run"]:
            match = next(
                (r for r in rows if r.get("run_dir") and Path(r["run_dir"]) == Path(point["run"])), None
            )
        if match is None:
            match = next(
                (
                    r
                    for r in rows
                    if r["shape"] == shape and point["registry_name"] in (r["model"], r["registry_name"])
                ),
                None,
            )
        if match is None:
            raise EmtmError(
                f"no GFLOPs for {point['model']!r}: give 'gflops' in its entry, or a --bench JSON with "
                f"a {shape!r} row of that model (emtm bench --models ... --json)"
            )
        point["gflops"] = match["gflops"]


def read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise EmtmError(f"{path}: cannot read it as JSON ({err})") from None


def plot(points: list[dict[str, Any]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    placed: list[tuple[float, float]] = []
    for p in sorted(points, key=lambda p: -p["r1"]):
        is_student = "student" in p["model"].lower() or "emtm" in p["model"].lower()
        ax.errorbar(
            p["gflops"], p["r1"], yerr=p["std"] or None, fmt="*" if is_student else "o",
            markersize=13 if is_student else 7, color="tab:red" if is_student else "tab:blue", capsize=3,
        )  # fmt: skip
        # a label right under another one (points of about the same FLOPs and accuracy) goes below its point
        near = any(abs(math.log10(p["gflops"] / g)) < 0.05 and abs(p["r1"] - r) < 1.5 for g, r in placed)
        offset = (6, -11) if near else (6, 4)
        ax.annotate(p["model"], (p["gflops"], p["r1"]), textcoords="offset points", xytext=offset, fontsize=8)
        placed.append((p["gflops"], p["r1"]))
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.15)  # room for the labels
    ax.set_xlabel("GFLOPs per query (log scale)")
    ax.set_ylabel("R1@0.7 (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", action="append", required=True, help="a results JSON (repeat)")
    p.add_argument("--bench", help="`emtm bench --json` output, for points without GFLOPs")
    p.add_argument("--shape", default="charades", help="bench shape to take GFLOPs from (default charades)")
    p.add_argument("--out", default="accuracy_flops.png")
    p.add_argument("--title", default="Accuracy vs FLOPs per query")
    args = p.parse_args(argv)
    try:
        points = []
        for path in args.results:
            points += points_from(read_json(path), path)
        bench = read_json(args.bench) if args.bench else None
        fill_gflops(points, bench, args.shape)
        for point in [p for p in points if p["gflops"] <= 0]:
            print(f"{point['model']}: R1@0.7 {point['r1']:.2f}, 0 GFLOPs/query: not drawn on the log axis")
        points = [p for p in points if p["gflops"] > 0]
        plot(points, Path(args.out), args.title)
    except EmtmError as err:
        print(f"plot_accuracy_flops.py: error: {err}", file=sys.stderr)
        return 2
    for point in points:
        print(f"{point['model']}: R1@0.7 {point['r1']:.2f}, {point['gflops']:.3f} GFLOPs/query")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
