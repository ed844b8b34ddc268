"""The report of an `emtm ablate` folder: each row's metrics as mean ± 95% CI over seeds, its best
validation epochs, paired differences against the student alone and the best single teacher
(ablation.md, ablation_summary.json), and the validation curves (ablation_curves.png).

Each (row, seed) folder keeps its test queries' top-1 IoUs (test_ious.json), so that a difference also
gets an interval from a bootstrap over seeds and test queries (`emtm.stats.paired_bootstrap`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from emtm.errors import EmtmError
from emtm.io import atomic_path, read_json, write_json, write_markdown_table
from emtm.stats import ci_text, mean_ci, paired_bootstrap, paired_difference

REPORTED = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")
QUERY_IOUS = "test_ious.json"  # in each (row, seed) folder: {"sample_ids": [...], "iou": [...]}
HIT_IOU = 0.7  # the bootstrap's hits: R1@0.7


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def seed_dir(out: Path, name: str, seed: int | str) -> Path:
    """The folder of one (row, seed) of an ablation."""
    return out / slug(name) / f"seed{seed}"


def write_query_ious(folder: Path, sample_ids: list[str], ious: np.ndarray) -> None:
    write_json(folder / QUERY_IOUS, {"sample_ids": sample_ids, "iou": [float(v) for v in ious]}, indent=None)


def query_hits(out: Path, name: str, seeds: list[str]) -> tuple[list[str], np.ndarray] | None:
    """The row's test sample ids and (seeds, queries) hits at IoU >= HIT_IOU in percent, or None when a
    seed has no test_ious.json (a folder from before they were kept)."""
    ids, hits = None, []
    for seed in seeds:
        path = seed_dir(out, name, seed) / QUERY_IOUS
        if not path.is_file():
            return None
        saved = read_json(path)
        if ids is not None and saved["sample_ids"] != ids:
            raise EmtmError(f"{path}: other test queries than seed {seeds[0]}'s")
        ids = saved["sample_ids"]
        hits.append((np.asarray(saved["iou"], dtype=np.float64) >= HIT_IOU) * 100.0)
    return ids or [], np.stack(hits)


def bootstrapped(out: Path | None, a: str, b: str, seeds: list[int]) -> dict[str, Any] | None:
    """`paired_bootstrap` of row a's R1@0.7 against row b's over `seeds` and the test queries (None
    without `out` or where a seed's query IoUs were not kept)."""
    if out is None:
        return None
    seeds_ = [str(s) for s in seeds]
    first, second = query_hits(out, a, seeds_), query_hits(out, b, seeds_)
    if first is None or second is None:
        return None
    if first[0] != second[0]:
        raise EmtmError(f"{out}: the rows {a!r} and {b!r} were tested on other queries")
    return paired_bootstrap(first[1], second[1])


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


def comparisons(state: dict[str, Any], out: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per row, its paired R1@0.7 and mIoU differences against the student alone (`vs_student`) and
    against the best single-teacher row by mean R1@0.7 (`vs_best_single`, naming it); with the ablation
    folder `out`, also R1@0.7's bootstrap over seeds and test queries (`bootstrap`, `bootstrapped`)."""
    rows = {name: r for name, r in state["rows"].items() if r["seeds"]}
    singles = [n for n, r in rows.items() if r.get("key", "").startswith("single:")]
    best = max(singles, key=lambda n: summarise(rows[n])["r1@0.7"]["mean"], default=None)
    versus = {}
    for name, results in rows.items():
        entry: dict[str, Any] = {}
        for label, other in (("vs_student", "student alone"), ("vs_best_single", best)):
            if other in rows and other != name:
                entry[label] = {k: paired(results, rows[other], k) for k in ("r1@0.7", "miou")}
                if pair := entry[label]["r1@0.7"]:
                    entry[label]["bootstrap"] = bootstrapped(out, name, other, pair["seeds"])
                if label == "vs_best_single":
                    entry[label]["row"] = best
        versus[name] = entry
    return versus


def diff_text(diff: dict[str, Any] | None) -> str:
    """'+1.20 ± 0.71 *' (the paired mean and 95% half-width; * when the interval excludes 0 over at
    least five seeds, † when it does over fewer: an indication, not a claim), or ''."""
    if not diff:
        return ""
    mark = (" *" if diff["n"] >= 5 else " †") if diff["excludes_zero"] else ""
    return f"{diff['mean']:+.2f} ± {diff['ci']:.2f}{mark}"


def versus_text(versus: dict[str, Any] | None) -> str:
    """`diff_text` of R1@0.7, then the bootstrap interval over seeds and queries, '[lo, hi]' (with ‡ when
    it excludes 0), where the query IoUs were kept."""
    if not versus:
        return ""
    text, boot = diff_text(versus.get("r1@0.7")), versus.get("bootstrap")
    if text and boot:
        text += f" [{boot['lo']:+.2f}, {boot['hi']:+.2f}]" + (" ‡" if boot["excludes_zero"] else "")
    return text


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


TABLE_TITLE = (
    "ablation, test split: mean ± 95% CI over seeds; differences paired over seeds "
    "(* CI excludes 0 over >= 5 seeds, † over fewer), then [95% bootstrap over seeds and test "
    "queries] (‡ it excludes 0)"
)


def summary_rows(state: dict[str, Any], versus: dict[str, dict[str, Any]] | None = None) -> list[list[Any]]:
    """One table row per finished ablation row: metrics as mean ± 95% CI over seeds, and the paired
    R1@0.7 difference against the student alone and the best single teacher (`versus_text`), from
    `versus` (`comparisons`; computed here without the bootstrap when not given)."""
    rows = []
    versus = comparisons(state) if versus is None else versus
    for name, results in state["rows"].items():
        if results["seeds"]:
            s = summarise(results)
            cells = [ci_text({**s[k], "ci": s[k]["ci"] or 0.0}) for k in REPORTED]
            v = versus.get(name, {})
            rows.append([
                name, *cells, f"{s['params'] / 1e6:.3f}", f"{s['gflops']:.3f}",
                best_epoch_text(s["best_epoch"]), s["n_seeds"],
                versus_text(v.get("vs_student")), versus_text(v.get("vs_best_single")),
            ])  # fmt: skip
    return rows


def write_report(out: Path, state: dict[str, Any]) -> None:
    versus = comparisons(state, out)
    summaries = {
        name: {**summarise(r), **versus.get(name, {})} for name, r in state["rows"].items() if r["seeds"]
    }
    write_json(out / "ablation_summary.json", summaries)
    write_markdown_table(out / "ablation.md", SUMMARY_COLUMNS, summary_rows(state, versus), title=TABLE_TITLE)
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
