r"""Does the student generalise? It against the plain recurrent bar (`bigru`) on several benchmarks.

    python benchmarks/generalise.py --out runs/bench/generalise \
        --bench pixels=runs/bench/distill-pixels/data/data.yaml \
        --bench unseen=data/synth-unseen/data.yaml \
        --models student bigru --seeds 0 1 2 --epochs 8 --jobs 2

Every (benchmark, model, seed) is one `emtm train` at default settings (only --epochs and --seed are
given), then `emtm evaluate --sensitivity` on the test split: R1, mIoU, the share of videos whose queries
get more than one top-1 moment, and the accuracy when each query is swapped for another of its video.
A model is `NAME` (a registered model at its defaults) or `LABEL=MODEL[:KEY=VALUE,...]` with `--set`
overrides (`student-ln=student:model_options.video_norm=standardize`). Finished runs are kept and
interrupted ones resumed. Writes OUT/generalise.json and OUT/generalise.md: per benchmark and model the
mean ± 95% CI over seeds, and each model's paired difference against the first model given.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from emtm.config import TrainConfig, apply_overrides
from emtm.engine.checkpoint import resolved_options, weight_names
from emtm.io import write_json, write_markdown_table
from emtm.stats import ci_text, mean_ci, paired_difference, verdict

KEYS = ("r1@0.5", "r1@0.7", "miou")
SENS_KEYS = ("distinct_top1_share", "drop_r1@0.5")


def parse_model(spec: str) -> tuple[str, str, list[str]]:
    """'student' -> ('student', 'student', []); 'a=student:x=1,y=2' -> ('a', 'student', ['x=1', 'y=2'])."""
    label, _, rest = spec.partition("=") if "=" in spec.split(":")[0] else (spec, "", spec)
    model, _, sets = rest.partition(":")
    return label, model, [s for s in sets.split(",") if s]


def settings_mismatch(run: Path, model: str, sets: list[str], seed: int, epochs: int) -> str | None:
    """Why a kept run was not trained as this benchmark asks (its model, seed, epochs, the `sets`, and
    every other optimisation setting at its default), or None. A run copied or linked in from another
    study, at another learning rate, must not pass for a default-settings run."""
    train = json.loads((run / "config.json").read_text())["train"]
    expected = TrainConfig.model_validate(
        apply_overrides(
            {"data": "x", "model": model, "optim": {"epochs": epochs}, "run": {"seed": seed}}, sets
        )
    )
    problems = []
    if train["model"] != model:
        problems.append(f"model {train['model']!r}, not {model!r}")
    if train["run"]["seed"] != seed:
        problems.append(f"seed {train['run']['seed']}, not {seed}")
    for key, value in expected.optim.model_dump().items():
        if key in train["optim"] and train["optim"][key] != (
            list(value) if isinstance(value, tuple) else value
        ):
            problems.append(f"optim.{key} {train['optim'][key]!r}, not {value!r}")
    wanted = resolved_options(model, expected.model_options)
    used = resolved_options(model, train["model_options"], weight_names(run / "model.safetensors"))
    for key, value in wanted.items():
        if used.get(key) != value:
            problems.append(f"model_options.{key} {used.get(key)!r}, not {value!r}")
    return "; ".join(problems) or None


def run_one(data: str, model: str, sets: list[str], seed: int, epochs: int, threads: int, out: Path) -> dict:
    """Train (or resume, or keep) one run and evaluate it with --sensitivity; the test metrics."""
    if (out / "config.json").exists() and (why := settings_mismatch(out, model, sets, seed, epochs)):
        raise SystemExit(f"{out}: kept run trained with other settings ({why}); move it away to retrain")
    test_json = out / "test.json"
    if test_json.exists():
        return json.loads(test_json.read_text())
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    emtm = [sys.executable, "-m", "emtm"]
    if not (out / "metrics.json").exists():
        cmd = [*emtm, "train", "--data", data, "--model", model, "--out", str(out), "--epochs", str(epochs),
               "--seed", str(seed), "--no-progress", "--set", f"run.threads={threads}"]  # fmt: skip
        for s in sets:
            cmd += ["--set", s]
        if (out / "last_state.pt").exists():
            cmd.append("--resume")
        log = out.with_suffix(".train.log")
        out.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as f:
            subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)
    cmd = [*emtm, "evaluate", "--run", str(out), "--sensitivity", "--no-progress", "--json", str(test_json)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads(test_json.read_text())


def epoch_seconds(run: Path) -> float:
    with (run / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    return sum(float(r["seconds"]) for r in rows) / max(len(rows), 1)


def summarise(results: dict[str, dict[str, dict[int, dict]]], out: Path, first: str) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for bench, models in results.items():
        summary[bench] = {}
        for label, by_seed in models.items():
            seeds = sorted(by_seed)
            entry: dict[str, Any] = {"seeds": seeds}
            for key in KEYS:
                entry[key] = mean_ci([by_seed[s][key] for s in seeds])
            for key in SENS_KEYS:
                entry[key] = mean_ci([by_seed[s]["sensitivity"][key] for s in seeds])
            entry["epoch_seconds"] = mean_ci([epoch_seconds(out / bench / f"{label}-s{s}") for s in seeds])
            if label != first and first in models:
                common = [s for s in seeds if s in models[first]]
                entry["vs_first"] = {
                    key: paired_difference([by_seed[s][key] for s in common],
                                           [models[first][s][key] for s in common])
                    for key in KEYS
                }  # fmt: skip
            summary[bench][label] = entry
    return summary


def table_rows(summary: dict[str, Any], first: str) -> list[list[Any]]:
    rows = []
    for bench, models in summary.items():
        for label, e in models.items():
            vs = e.get("vs_first", {}).get("r1@0.5")
            rows.append([
                bench, label, len(e["seeds"]), *(ci_text(e[k]) for k in KEYS),
                ci_text(e["distinct_top1_share"], 1), ci_text(e["drop_r1@0.5"], 1),
                f"{e['epoch_seconds']['mean']:.1f}",
                f"{ci_text(vs)} ({verdict(vs, label, first)})" if vs else "",
            ])  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", action="append", required=True, help="NAME=path/to/data.yaml (repeat)")
    ap.add_argument("--models", nargs="+", default=["student", "bigru"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each with --threads torch threads)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/generalise"))
    ap.add_argument("--report-only", action="store_true", help="summarise the finished runs, train nothing")
    args = ap.parse_args()
    benches = dict(b.split("=", 1) for b in args.bench)
    models = [parse_model(m) for m in args.models]
    jobs = [(bench, label, model, sets, seed) for bench in benches for label, model, sets in models
            for seed in args.seeds]  # fmt: skip
    started = time.time()

    if args.report_only:
        jobs = [j for j in jobs if (args.out / j[0] / f"{j[1]}-s{j[4]}" / "test.json").exists()]

    def one(job: tuple) -> tuple:
        bench, label, model, sets, seed = job
        run = args.out / bench / f"{label}-s{seed}"
        metrics = run_one(benches[bench], model, sets, seed, args.epochs, args.threads, run)
        print(f"{bench} {label} seed {seed}: R1@0.5 {metrics['r1@0.5']:.2f} R1@0.7 {metrics['r1@0.7']:.2f} "
              f"({time.time() - started:.0f} s)", flush=True)  # fmt: skip
        return bench, label, seed, metrics

    results: dict[str, dict[str, dict[int, dict]]] = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        for bench, label, seed, metrics in pool.map(one, jobs):
            results.setdefault(bench, {}).setdefault(label, {})[seed] = metrics
    first = models[0][0]
    summary = summarise(results, args.out, first)
    record = {"epochs": args.epochs, "models": args.models, "summary": summary}
    write_json(args.out / "generalise.json", record)
    header = ["benchmark", "model", "seeds", *(f"test {k}" for k in KEYS), "videos with distinct top-1 %",
              "R1@0.5 lost when swapped", "s / epoch", f"R1@0.5 - {first} (paired 95% CI)"]  # fmt: skip
    title = f"student vs baselines, {args.epochs} epochs, default settings, mean ± 95% CI over seeds"
    write_markdown_table(args.out / "generalise.md", header, table_rows(summary, first), title=title)
    print((args.out / "generalise.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
