"""The report of an `emtm ablate` folder: each row's metrics as mean ± 95% CI over seeds, its best
validation epochs, paired differences against the student alone and the best single teacher
(ablation.md, ablation_summary.json), and the validation curves (ablation_curves.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from emtm.io import atomic_path, write_json, write_markdown_table
from emtm.stats import ci_text, mean_ci, paired_difference

REPORTED = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def best_epoch(run_dir: Path) -> list[int] | None:
    """[the epoch chosen on validation, the epochs trained] of a finished run (its metrics.json)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if not metrics.get("best") or not metrics.get("history"):
        return None
    return [int(metrics["best"]["epoch"]), len(metrics["history"])]


def fill_best_epochs(out: Path, state: dict[str, Any]) -> None:
    """The best validation epoch of every finished (row, seed) that ablation.json does not hold yet,
    read from the run's folder (or the reused run's): run after each pass, so rows recorded before
    this field existed get it too."""
    for name, results in state["rows"].items():
        known = results.setdefault("best_epoch", {})
        for seed in results["seeds"]:
            if known.get(seed) is None:
                run_dir = results.get("runs", {}).get(seed) or out / slug(name) / f"seed{seed}"
                known[seed] = best_epoch(Path(run_dir))


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over seeds."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def stat_text(stat: dict[str, float], n_seeds: int) -> str:
    """A `mean_std` result as 'mean ± std' to two decimals, or the mean alone for one seed."""
    return f"{stat['mean']:.2f}" if n_seeds == 1 else f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def mean_std_text(values: list[float]) -> str:
    """'mean ± std' of `values` to two decimals, or the value alone for one seed."""
    return stat_text(mean_std(values), len(values))


def with_ci(values: list[float]) -> dict[str, Any]:
    """`mean_std` plus the 95% t half-width `ci` (None for one seed) and `n`."""
    stat = mean_ci(values)
    return {**mean_std(values), "ci": None if stat["n"] < 2 else stat["ci"], "n": stat["n"]}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    seeds = list(results["seeds"].values())
    summary = {
        "key": results.get("key", ""),
        "n_seeds": len(seeds),
        "params": results.get("params"),
        "gflops": results.get("gflops"),
    }
    for key in REPORTED:
        summary[key] = with_ci([s[key] for s in seeds])
    epochs = [e for e in results.get("best_epoch", {}).values() if e]
    summary["best_epoch"] = {
        "per_seed": [e[0] for e in epochs],
        "of": max((e[1] for e in epochs), default=None),
    }
    return summary


def best_epoch_text(best: dict[str, Any]) -> str:
    """'6-8 of 8': the range over seeds of the epoch chosen on validation, of the epochs trained."""
    chosen = best["per_seed"]
    if not chosen:
        return ""
    low, high = min(chosen), max(chosen)
    return f"{low if low == high else f'{low}-{high}'} of {best['of']}"


def paired(a: dict[str, Any], b: dict[str, Any], key: str = "r1@0.7") -> dict[str, Any] | None:
    """Paired difference a - b of `key` over the seeds both rows finished (None with fewer than 2)."""
    common = sorted(set(a["seeds"]) & set(b["seeds"]), key=int)
    if len(common) < 2:
        return None
    diff = paired_difference([a["seeds"][s][key] for s in common], [b["seeds"][s][key] for s in common])
    return {**diff, "seeds": [int(s) for s in common]}


def comparisons(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per row, its paired R1@0.7 and mIoU differences against the student alone (`vs_student`) and
    against the best single-teacher row by mean R1@0.7 (`vs_best_single`, naming it)."""
    rows = {name: r for name, r in state["rows"].items() if r["seeds"]}
    student = rows.get("student alone")
    singles = {n: r for n, r in rows.items() if r.get("key", "").startswith("single:")}
    best = max(singles, key=lambda n: summarise(singles[n])["r1@0.7"]["mean"], default=None)
    out = {}
    for name, results in rows.items():
        entry: dict[str, Any] = {}
        for label, other in (("vs_student", student), ("vs_best_single", rows.get(best) if best else None)):
            if other is not None and other is not results:
                entry[label] = {k: paired(results, other, k) for k in ("r1@0.7", "miou")}
                if label == "vs_best_single":
                    entry[label]["row"] = best
        out[name] = entry
    return out


def diff_text(diff: dict[str, Any] | None) -> str:
    """'+1.20 ± 0.71 *' (the paired mean and 95% half-width; * when the interval excludes 0 over at
    least five seeds, † when it does over fewer: an indication, not a claim), or ''."""
    if not diff:
        return ""
    mark = (" *" if diff["n"] >= 5 else " †") if diff["excludes_zero"] else ""
    return f"{diff['mean']:+.2f} ± {diff['ci']:.2f}{mark}"


SUMMARY_COLUMNS = [
    "row",
    *REPORTED,
    "params (M)",
    "GFLOPs/query",
    "best val epoch",
    "seeds",
    "R1@0.7 - student",
    "R1@0.7 - best single",
]


def summary_rows(state: dict[str, Any]) -> list[list[Any]]:
    """One table row per finished ablation row: metrics as mean ± 95% CI over seeds, and the paired
    R1@0.7 difference against the student alone and the best single teacher (`diff_text`)."""
    rows, versus = [], comparisons(state)
    for name, results in state["rows"].items():
        if results["seeds"]:
            s = summarise(results)
            cells = [ci_text({**s[k], "ci": s[k]["ci"] or 0.0}) for k in REPORTED]
            v = versus.get(name, {})
            rows.append([
                name, *cells, f"{s['params'] / 1e6:.3f}", f"{s['gflops']:.3f}",
                best_epoch_text(s["best_epoch"]), s["n_seeds"],
                diff_text(v.get("vs_student", {}).get("r1@0.7")),
                diff_text(v.get("vs_best_single", {}).get("r1@0.7")),
            ])  # fmt: skip
    return rows


def write_report(out: Path, state: dict[str, Any]) -> None:
    versus = comparisons(state)
    summaries = {
        name: {**summarise(r), **versus.get(name, {})} for name, r in state["rows"].items() if r["seeds"]
    }
    write_json(out / "ablation_summary.json", summaries)
    title = (
        "ablation, test split: mean ± 95% CI over seeds; differences paired over seeds "
        "(* CI excludes 0 over >= 5 seeds, † over fewer)"
    )
    write_markdown_table(out / "ablation.md", SUMMARY_COLUMNS, summary_rows(state), title=title)
    plot_curves(out, state)


def validation_curves(out: Path, state: dict[str, Any], key: str = "val_r1@0.7") -> dict[str, np.ndarray]:
    """Per finished row, its runs' validation `key` by epoch: (seeds, epochs), from each metrics.json."""
    curves = {}
    for name, results in state["rows"].items():
        runs = []
        for seed in results["seeds"]:
            path = out / slug(name) / f"seed{seed}" / "metrics.json"
            if path.exists():
                runs.append([row[key] for row in json.loads(path.read_text())["history"]])
        if runs and len({len(r) for r in runs}) == 1:
            curves[name] = np.array(runs, dtype=float)
    return curves


def plot_curves(out: Path, state: dict[str, Any]) -> None:
    """ablation_curves.png: each row's validation R1@0.7 by epoch, mean over seeds, min-max shaded."""
    curves = validation_curves(out, state)
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, runs in curves.items():
        epochs = np.arange(1, runs.shape[1] + 1)
        (line,) = ax.plot(epochs, runs.mean(0), marker=".", label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(epochs, runs.min(0), runs.max(0), color=line.get_color(), alpha=0.12)
    ax.set(xlabel="epoch", ylabel="validation R1@0.7 (%)", title="ablation: validation R1@0.7 by epoch")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(out / "ablation_curves.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
