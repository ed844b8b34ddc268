"""The paper's distillation variants on the teachers of a finished pipeline run (`make demo`,
`emtm recipe`, benchmarks/distill.py): KD weight, temperature, per-clip KAU weights, alignment loss.

    python benchmarks/distill_variants.py --run runs/demo                       # every variant
    python benchmarks/distill_variants.py --run runs/demo --variants kd1,kd3    # some of them

Each variant trains the EMTM model again from the run's teacher caches, with the run's own data,
epochs, optimiser and seed, changing only the options named below; then its exported student is
evaluated on the test split. Resumable: a finished variant is kept. Writes RUN/variants/variants.json
and variants.md: R1@{0.3,0.5,0.7} and mIoU of each variant next to the run's student alone, its
EMTM student (the defaults) and its best teacher, and the share of the teacher gap each recovers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emtm.config import TrainConfig
from emtm.engine.checkpoint import export_student
from emtm.engine.pipeline import measure, train_step
from emtm.errors import EmtmError
from emtm.io import write_json, write_markdown_table

# name -> (what it changes, model_options overrides); the defaults are KD weight 0.1, T 1, per-sample KAU
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "kd1": ("KD weight 1.0", {"kd_weight": 1.0}),
    "kd3": ("KD weight 3.2 (0.1 on a batch-summed KL at batch 32)", {"kd_weight": 3.2}),
    "t3": ("KD weight 1.0, temperature 3", {"kd_weight": 1.0, "temperature": 3.0}),
    "perclip": ("KD weight 1.0, per-clip KAU weights", {"kd_weight": 1.0, "per_clip_weights": True}),
    "align": ("KD weight 1.0, hidden-state alignment loss 0.1", {"kd_weight": 1.0, "align_weight": 0.1}),
}
METRICS = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")


def run_variant(run: Path, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    base = json.loads((run / "emtm" / "config.json").read_text())["train"]
    cfg = TrainConfig(**{**base, "model_options": {**base["model_options"], **overrides}})
    out = run / "variants" / name
    train_step(cfg, out)
    if not (out / "student" / "model.safetensors").exists():
        export_student(out)
    metrics, _ = measure(out / "student", Path(cfg.data), cfg.run.device, cfg.run.threads)
    return {k: metrics[k] for k in (*METRICS, "n_queries")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo", help="a finished pipeline run (has report.json, emtm/)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not (run / "report.json").exists() or not (run / "emtm" / "config.json").exists():
        raise EmtmError(f"{run}: not a finished pipeline run (no report.json or emtm/config.json)")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise EmtmError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    report = json.loads((run / "report.json").read_text())
    results_path = run / "variants" / "variants.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in names:
        print(f"== variant {name}: {VARIANTS[name][0]}", flush=True)
        results[name] = {"changes": VARIANTS[name][0], **run_variant(run, name, VARIANTS[name][1])}
        write_json(results_path, results)
    teachers = {k: v for k, v in report.items() if k.startswith("teacher: ")}
    best_name, best = max(teachers.items(), key=lambda item: item[1]["r1@0.7"])
    alone = report["student alone"]["r1@0.7"]
    gap = best["r1@0.7"] - alone
    rows = [[best_name, "-", *(best[k] for k in METRICS), "-"]]
    rows.append(["student alone", "-", *(report["student alone"][k] for k in METRICS), "0%"])
    defaults = report["EMTM student"]
    entries = [("EMTM student", "defaults (KD weight 0.1, T 1)", defaults)]
    entries += [(f"EMTM {n}", r["changes"], r) for n, r in results.items()]
    for label, changes, metrics in entries:
        share = f"{(metrics['r1@0.7'] - alone) / gap:.0%}" if gap > 0 else "-"
        rows.append([label, changes, *(metrics[k] for k in METRICS), share])
    columns = ["model", "changes", *METRICS, "share of the R1@0.7 gap recovered"]
    title = f"{run}: test split, {defaults['n_queries']} queries; gap {gap:.2f} R1@0.7 ({best_name})"
    write_markdown_table(run / "variants" / "variants.md", columns, rows, title)
    print((run / "variants" / "variants.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
