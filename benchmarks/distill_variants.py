"""The paper's distillation variants on the teachers of a finished pipeline run (`make demo`,
`emtm recipe`, benchmarks/distill.py): KD weight, temperature, per-clip KAU weights, alignment loss,
and more seeds of the student alone and of the run's own EMTM settings.

    python benchmarks/distill_variants.py --run runs/demo                         # every variant, seed 0
    python benchmarks/distill_variants.py --run runs/demo --variants kd0.1,kd1    # some of them
    python benchmarks/distill_variants.py --run runs/demo --variants alone,run --seeds 1,2
    python benchmarks/distill_variants.py --run runs/demo --variants alone,run --epochs 16   # longer

Each variant trains again from the run's teacher caches, with the run's own data, epochs, optimiser
and EMTM options, changing only what its entry below names (`alone`: the run's student alone; `run`:
the run's own EMTM settings); its student is evaluated on the test split. Seed 0 of `alone` and `run`
are the run's own `student_alone` and `emtm`. Resumable: a finished training is kept. Writes
RUN/variants/variants.json and variants.md: test R1@{0.3,0.5,0.7} and mIoU (mean and std over the
seeds run so far), best validation R1@0.7 (what a variant would be chosen on), and the share of the
gap between the student alone and the best teacher that each recovers. With --epochs N every variant
trains N epochs instead of the run's own; those runs and their table go to RUN/variants/eN/.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from emtm.config import TrainConfig
from emtm.engine.checkpoint import export_student
from emtm.errors import EmtmError
from emtm.experiments.ablation_report import mean_std_text
from emtm.experiments.pipeline import measure, train_step
from emtm.io import write_json, write_markdown_table

# name -> (what it is, EMTM model_options over the run's); absolute settings, whatever the run used
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "alone": ("student alone (no teachers)", {}),
    "run": ("the run's own EMTM settings", {}),
    "kd0.1": ("KD weight 0.1 (the method's default)", {"kd_weight": 0.1}),
    "kd1": ("KD weight 1.0", {"kd_weight": 1.0}),
    "kd3.2": ("KD weight 3.2 (0.1 on a batch-summed KL at batch 32)", {"kd_weight": 3.2}),
    "t3": ("KD weight 3.2, temperature 3", {"kd_weight": 3.2, "temperature": 3.0}),
    "perclip": ("KD weight 3.2, per-clip KAU weights", {"kd_weight": 3.2, "per_clip_weights": True}),
    "align": ("KD weight 3.2, hidden-state alignment 0.1", {"kd_weight": 3.2, "align_weight": 0.1}),
}
METRICS = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")


def folder(run: Path, epochs: int | None) -> Path:
    """Where the variants of `run` go: RUN/variants, or RUN/variants/eN for runs of N epochs."""
    return run / "variants" / (f"e{epochs}" if epochs else "")


def run_dir_of(run: Path, name: str, seed: int, epochs: int | None = None) -> Path:
    if seed == 0 and name in ("alone", "run") and not epochs:
        return run / ("student_alone" if name == "alone" else "emtm")
    return folder(run, epochs) / f"{name}-s{seed}"


def run_variant(run: Path, name: str, seed: int, epochs: int | None = None) -> dict[str, Any]:
    """Train (or keep) one variant at one seed (and `epochs`, default the run's own); its test metrics
    and best validation R1@0.7."""
    base_run = run / ("student_alone" if name == "alone" else "emtm")
    base = json.loads((base_run / "config.json").read_text())["train"]
    if epochs == base["optim"]["epochs"]:
        epochs = None  # the run's own length: the run's own folders
    options = {**base["model_options"], **VARIANTS[name][1]}
    optim = {**base["optim"], "epochs": epochs or base["optim"]["epochs"]}
    cfg = TrainConfig(
        **{**base, "model_options": options, "optim": optim, "run": {**base["run"], "seed": seed}}
    )
    out = run_dir_of(run, name, seed, epochs)
    train_step(cfg, out)
    student = out
    if name != "alone":
        student = out / "student"
        if not (student / "model.safetensors").exists():
            export_student(out)
    metrics, _ = measure(student, Path(cfg.data), cfg.run.device, cfg.run.threads)
    best_val = json.loads((out / "metrics.json").read_text())["best"]["r1@0.7"]
    return {**{k: metrics[k] for k in (*METRICS, "n_queries")}, "val_r1@0.7": best_val}


def table(
    run: Path, results: dict[str, dict[str, Any]], epochs: int | None = None
) -> tuple[list[str], list[list[Any]], str]:
    report = json.loads((run / "report.json").read_text())
    if epochs and "alone" not in results:
        raise EmtmError(
            f"the {epochs}-epoch table needs the 'alone' variant for its gap; add it to --variants"
        )
    teachers = {k: v for k, v in report.items() if k.startswith("teacher: ")}
    best_name, best = max(teachers.items(), key=lambda item: item[1]["r1@0.7"])
    alone = [r["r1@0.7"] for r in results.get("alone", {}).values()] or [report["student alone"]["r1@0.7"]]
    gap = best["r1@0.7"] - statistics.mean(alone)
    rows: list[list[Any]] = [[best_name, "-", "0", *(f"{best[k]:.2f}" for k in METRICS), "-", "-"]]
    for name, by_seed in sorted(results.items(), key=lambda item: list(VARIANTS).index(item[0])):
        seeds = sorted(by_seed, key=int)
        cols = [mean_std_text([by_seed[s][k] for s in seeds]) for k in (*METRICS, "val_r1@0.7")]
        share = (statistics.mean(by_seed[s]["r1@0.7"] for s in seeds) - statistics.mean(alone)) / gap
        rows.append([name, VARIANTS[name][0], ",".join(seeds), *cols, f"{share:.0%}" if gap > 0 else "-"])
    columns = ["variant", "what", "seeds", *METRICS, "best val R1@0.7", "share of the gap recovered"]
    n = report["EMTM student"]["n_queries"]
    length = f"{epochs} epochs each (teachers as trained)" if epochs else "the run's own epochs"
    title = (
        f"{run}: test split, {n} queries, {length}; R1@0.7 gap {gap:.2f} ({best_name} vs the student alone)"
    )
    return columns, rows, title


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo", help="a finished pipeline run (has report.json, emtm/)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0", help="comma list of seeds, e.g. 0,1,2")
    parser.add_argument("--epochs", type=int, help="epochs for every variant (default: the run's own)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not (run / "report.json").exists() or not (run / "emtm" / "config.json").exists():
        raise EmtmError(f"{run}: not a finished pipeline run (no report.json or emtm/config.json)")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise EmtmError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    base_epochs = json.loads((run / "emtm" / "config.json").read_text())["train"]["optim"]["epochs"]
    epochs = None if args.epochs in (None, base_epochs) else args.epochs
    path = folder(run, epochs) / "variants.json"
    for seed in seeds:
        for name in names:
            print(f"== {name} (seed {seed}): {VARIANTS[name][0]}", flush=True)
            result = run_variant(run, name, seed, epochs)
            results = json.loads(path.read_text()) if path.exists() else {}  # re-read: runs may share it
            results.setdefault(name, {})[str(seed)] = result
            write_json(path, results)
    columns, rows, title = table(run, json.loads(path.read_text()), epochs)
    write_markdown_table(path.with_suffix(".md"), columns, rows, title)
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
