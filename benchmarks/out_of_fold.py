"""Out-of-fold teacher caches against ordinary ones: does the KAU weigh the teachers better when their
cached outputs are on queries they were not trained on?

    python benchmarks/out_of_fold.py --out runs/oof                      # small preset, 3 folds, row 5
    python benchmarks/out_of_fold.py --out runs/oof --rows 3,4,5 --seeds 3

The ordinary cache of a teacher holds its outputs on its own training queries, where it is more certain
and more often right than on new queries; the KAU learns its weights from them (docs/RESULTS.md, "How
the KAU weighs the two teachers"). An out-of-fold cache (`emtm train --fold i/k`, then `emtm teachers
export --run RUN0 ... RUNk-1`) holds, for every train query, the output of the teacher trained without
that query's fold.

Steps, each kept when already done (run the same command again to resume; a second process with the
same --out shares the ablation's runs):
1. the benchmark (`--preset`, default the demo's `small`);
2. each teacher (the demo's: SeqPAN d=128, proposals, regress; `--teacher-epochs`, lr 1e-3, seed 0)
   on the whole train split, and on it without each of the k folds (for k/(k-1) times the epochs by
   default, so that every fold run makes as many updates as the run on the whole split);
3. per teacher, the ordinary cache (the whole-split run) and the out-of-fold cache (the k fold runs);
4. `emtm ablate` with the ordinary caches and with the out-of-fold caches (`--rows`, `--seeds`, KD 3.2);
5. per distilled run of the ablation, the KAU table on its validation queries (`emtm show --split val`).

Writes OUT/out_of_fold.json and out_of_fold.md: each row's test metrics (mean ± std over seeds) for both
cache kinds, and the KAU's ensemble hard loss on validation against the plain mean and the oracle.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emtm.config import OptimConfig, TrainConfig
from emtm.data import synth
from emtm.experiments.ablate import parse_rows, run_ablation
from emtm.experiments.ablation_report import mean_std_text, slug
from emtm.experiments.demo import DEMO_KD_WEIGHT, DEMO_TEACHERS
from emtm.experiments.pipeline import export_if_stale, fold_epochs, kau_table, train_step
from emtm.io import write_json, write_markdown_table

KINDS = ("ordinary", "out-of-fold")
METRICS = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")


def teacher_config(data: Path, name: str, epochs: int, threads: int, fold: tuple[int, int] | None):
    options = DEMO_TEACHERS[name][1]
    optim = OptimConfig(epochs=epochs, lr=1e-3)
    run = {"seed": 0, "threads": threads, "progress": False}
    return TrainConfig(data=str(data), model=name, model_options=options, optim=optim, run=run, fold=fold)


def build_caches(
    data: Path, out: Path, folds: int, epochs: int, fold_epochs: int, threads: int
) -> dict[str, list[str]]:
    """Train every teacher on the whole train split and without each fold; export both kinds of cache."""
    caches: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for name in DEMO_TEACHERS:
        whole = out / "teachers" / name
        train_step(teacher_config(data, name, epochs, threads, None), whole)
        fold_runs = [out / "teachers" / f"{name}-fold{i}of{folds}" for i in range(folds)]
        for i, run_dir in enumerate(fold_runs):
            train_step(teacher_config(data, name, fold_epochs, threads, (i, folds)), run_dir)
        for kind, runs in (("ordinary", [whole]), ("out-of-fold", fold_runs)):
            cache = out / "caches" / kind / f"{name}.h5"
            cache.parent.mkdir(parents=True, exist_ok=True)
            export_if_stale(runs, data, "train", cache, temperature=1.0)
            caches[kind].append(str(cache.resolve()))
    return caches


def kau_tables(ablation: Path) -> dict[str, dict[str, Any]]:
    """{run folder: its KAU table on validation} for every finished distilled run of an ablation."""
    tables = {}
    for run_dir in sorted(p.parent for p in ablation.glob("*/seed*/model.safetensors")):
        table = kau_table(run_dir)
        if table is not None:
            tables[f"{run_dir.parent.name}/{run_dir.name}"] = table
    return tables


def report(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    rows = []
    for kind in KINDS:
        ablation = out / f"ablation-{kind}"
        state = json.loads((ablation / "ablation.json").read_text())
        kau = kau_tables(ablation)
        result[kind] = {"rows": state["rows"], "kau": kau}
        for name, row in state["rows"].items():
            seeds = row["seeds"]
            if not seeds:
                continue
            cells = [mean_std_text([s[m] for s in seeds.values()]) for m in METRICS]
            table = kau.get(f"{slug(name)}/seed0")  # seed 0: the validation videos no teacher saw
            if table:
                loss = table["ensemble_hard_loss"]
                kau_cells = [f"{loss[key]:.3f}" for key in ("KAU weights", "plain mean", "oracle pick")]
                kau_cells.append(f"{table['kau_agrees_with_oracle'] * 100:.1f}")
            else:
                kau_cells = ["-"] * 4
            rows.append([kind, name, *cells, *kau_cells, len(seeds)])
    columns = [
        "caches", "row", *(f"test {m}" for m in METRICS), "seed 0 val hard loss: KAU", "plain mean",
        "oracle", "KAU top pick = oracle's (%)", "seeds",
    ]  # fmt: skip
    write_json(out / "out_of_fold.json", result)
    write_markdown_table(out / "out_of_fold.md", columns, rows)
    print((out / "out_of_fold.md").read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/oof"))
    parser.add_argument("--preset", default="small", choices=list(synth.PRESETS))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument(
        "--fold-epochs",
        type=int,
        help="epochs of each fold run (default: teacher epochs x K/(K-1), the same number of updates "
        "as the run on the whole split)",
    )
    parser.add_argument("--epochs", type=int, default=8, help="epochs of every distilled student")
    parser.add_argument("--rows", default="5", help="ablation rows (emtm ablate --rows)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="only (re)write the tables")
    args = parser.parse_args()

    data = args.out / "data" / "data.yaml"
    if not args.report_only:
        if not data.exists():
            synth.generate(synth.PRESETS[args.preset], data.parent)
        epochs = args.fold_epochs or fold_epochs(args.teacher_epochs, args.folds)
        caches = build_caches(data, args.out, args.folds, args.teacher_epochs, epochs, args.threads)
        for kind in KINDS:
            print(f"ablation with the {kind} caches, rows {args.rows}")
            run_ablation(
                data, caches[kind], args.out / f"ablation-{kind}", seeds=args.seeds, epochs=args.epochs,
                lr=1e-3, rows=parse_rows(args.rows), threads=args.threads,
                emtm_options={"kd_weight": DEMO_KD_WEIGHT}, progress=False,
            )  # fmt: skip
    report(args.out)


if __name__ == "__main__":
    main()
