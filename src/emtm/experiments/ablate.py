"""The paper's ablation table (`emtm ablate`): each row trained over several seeds, mean ± 95% CI, with
paired differences against the student alone and the best single teacher.

Rows: 1 student alone; 2 student + each single teacher; 3 + the mean of the teachers; 4 + KAU; 5 + KAU
and the shared encoder (full EMTM), and full EMTM with the fixed held-out mixture in the KAU's place;
6 full EMTM with 1..K teachers; 7 full EMTM with d in {32, 64, 128}.
Controls: 8 KD toward the Gaussian-smoothed ground truth (no teacher: how much is label smoothing);
9 the best global teacher weights, fitted on the validation queries; 10 the mean of calibrated
teachers (given as `calibrated` caches, `emtm teachers export` with calibration). When the teachers'
caches record the validation videos their runs held out (`CacheMeta.holdout_seed`), every row and seed
holds out those videos: seeds then differ in initialisation and order, not in their training queries.
Several sets of the same teachers, trained with different seeds, spread the seeds over them (seed s
from set s mod n), so that a row's spread includes its teachers' own.
Resumable: every finished (row, seed) is stored in ablation.json and never recomputed, and a run
stopped part-way continues from its last checkpoint. Parallel: any number of `emtm ablate` processes
may share one --out folder; each (row, seed) is trained by whichever process locks it first (an OS
file lock, released if that process dies), and every result is merged into ablation.json under a lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtm.config import TrainConfig, validate
from emtm.data.dataset import split_dataset
from emtm.device import num_threads, resolve_device
from emtm.distill.cache import teachers_holdout_seed
from emtm.distill.model import AGGREGATORS, EMTMConfig
from emtm.engine.checkpoint import LoadedRun, load_run, resolved_options, weight_names
from emtm.engine.evaluate import SplitPredictions, predict_dataset, query_ious, score_predictions
from emtm.engine.flops import count_parameters, flops_per_query
from emtm.engine.run_data import with_fitted_weights
from emtm.errors import ConfigError, EmtmError
from emtm.experiments.ablation_report import (
    QUERY_IOUS,
    fill_best_epochs,
    seed_dir,
    write_query_ious,
    write_report,
)
from emtm.experiments.pipeline import finished, train_step
from emtm.io import claim, lock_file, write_json

DISTILL_ONLY = {"isomorphic": False, "use_kau": False}
FIXED_WEIGHTS = AGGREGATORS["fixed"]  # fitted on each run's validation queries
GT_SMOOTH_SIGMA = 0.05  # the gt-smooth control's Gaussian width: the proposals/regression default
N_ROWS = 10


@dataclass
class Row:
    name: str
    model: str
    teachers: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    group: int = 1  # the row's number in the paper's ablation (module docstring), for --rows
    key: str = ""  # the stable name in ablation_summary.json: student, single:<teacher>, mean, kau, emtm, ...


def ablation_rows(
    teachers: list[str], dims: tuple[int, ...] = (32, 64, 128), calibrated: list[str] | None = None
) -> Iterator[Row]:
    """The rows in the paper's order; each has a display name and a stable key (`Row.key`)."""
    names = [Path(t).stem for t in teachers]
    yield Row("student alone", "student", group=1, key="student")
    for path, name in zip(teachers, names):
        yield Row(f"student + {name}", "emtm", [path], dict(DISTILL_ONLY), group=2, key=f"single:{name}")
    if len(teachers) > 1:
        yield Row("student + mean of teachers", "emtm", teachers, dict(DISTILL_ONLY), group=3, key="mean")
    yield Row("student + KAU", "emtm", teachers, {"isomorphic": False}, group=4, key="kau")
    yield Row("student + KAU + shared encoder (EMTM)", "emtm", teachers, group=5, key="emtm")
    if len(teachers) > 1:  # full EMTM with the held-out fixed mixture in the KAU's place
        yield Row(
            "student + fixed held-out weights + shared encoder (EMTM, fixed)", "emtm", teachers,
            dict(FIXED_WEIGHTS), group=5, key="emtm:fixed",
        )  # fmt: skip
    for k in range(1, len(teachers)):
        yield Row(
            f"EMTM, {k} teacher(s): {', '.join(names[:k])}", "emtm", teachers[:k], group=6,
            key=f"emtm:teachers={'+'.join(names[:k])}",
        )  # fmt: skip
    for d in dims:
        if d != 128:
            yield Row(f"EMTM, d={d}", "emtm", teachers, {"d": d}, group=7, key=f"emtm:d={d}")
    # Controls: label smoothing at the KD weight (no teacher), and the best global teacher weights.
    gt = {**DISTILL_ONLY, "gt_smooth": GT_SMOOTH_SIGMA}
    yield Row("student + smoothed ground truth (no teacher)", "emtm", [], gt, group=8, key="gt-smooth")
    if len(teachers) > 1:
        yield Row(
            "student + best global weights (fitted on validation)", "emtm", teachers,
            {**DISTILL_ONLY, **FIXED_WEIGHTS}, group=9, key="fixed-best",
        )  # fmt: skip
    if calibrated and len(calibrated) > 1:
        yield Row(
            "student + mean of calibrated teachers", "emtm", calibrated, dict(DISTILL_ONLY), group=10,
            key="calibrated-mean",
        )  # fmt: skip


def run_ablation(
    data: Path,
    teachers: Sequence[str] | Sequence[Sequence[str]],
    out: Path,
    seeds: int = 3,
    epochs: int = 20,
    lr: float = 1e-3,
    device: str = "auto",
    rows: set[int | str] | None = None,
    emtm_options: dict[str, Any] | None = None,
    threads: int | None = None,
    reuse: Sequence[Path] = (),
    progress: bool = True,
    calibrated: Sequence[str] | Sequence[Sequence[str]] = (),
) -> tuple[dict[str, Any], list[str]]:
    """Train and evaluate every ablation row (or only the row numbers or keys in `rows`) over `seeds`
    seeds.

    `teachers` is one list of caches, or several sets of the same teachers (trained with different
    seeds, the same file names in each): seed s is distilled from set s mod n, so that the spread over
    seeds includes the teachers' own. `calibrated` pairs with them the same way.

    `emtm_options` (e.g. {"kd_weight": 3.2}) apply to every distilled row, under the row's own options.
    Training and evaluation run at `threads` intra-op threads (None: as they are). A (row, seed) whose
    training config is that of a finished run in `reuse` (same_training) is evaluated from that run
    instead of being trained again. `progress`: a progress bar per epoch. Returns the merged state of
    ablation.json and the runs left to other processes still training them.
    """
    if threads is not None and threads < 1:
        raise EmtmError(f"threads must be at least 1, got {threads}")
    with num_threads(threads):
        return _run_ablation(
            data, teacher_sets(teachers, "--teachers") or [[]], out, seeds, epochs, lr, device, rows,
            emtm_options, threads, reuse, progress, teacher_sets(calibrated, "--calibrated"),
        )  # fmt: skip


def teacher_sets(teachers: Sequence[str] | Sequence[Sequence[str]], flag: str) -> list[list[str]]:
    """One or several sets of teacher caches, as resolved paths; every set names the same teachers."""
    if not teachers:
        return []
    flat = isinstance(teachers[0], str | os.PathLike)
    sets = [[str(Path(t).resolve()) for t in one] for one in ([teachers] if flat else teachers)]
    names = [[Path(t).stem for t in one] for one in sets]
    for i, other in enumerate(names[1:], start=2):
        if other != names[0]:
            raise EmtmError(
                f"{flag} set {i} names the teachers {other}, set 1 {names[0]}: each set holds the same "
                "teachers (trained with another seed), with the same file names, in the same order"
            )
    return sets


def _run_ablation(
    data: Path,
    sets: list[list[str]],
    out: Path,
    seeds: int,
    epochs: int,
    lr: float,
    device: str,
    rows: set[int | str] | None,
    emtm_options: dict[str, Any] | None,
    threads: int | None,
    reuse: Sequence[Path],
    progress: bool,
    calibrated: list[list[str]],
) -> tuple[dict[str, Any], list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    if calibrated and len(calibrated) != len(sets):
        raise EmtmError(
            f"--calibrated gives {len(calibrated)} set(s) of caches and --teachers {len(sets)}: one "
            "calibrated set per teacher set"
        )
    emtm_options = dict(emtm_options or {})
    validate(EMTMConfig, emtm_options, "--emtm-option")  # a bad option fails before any training
    with locked_state(out) as state:
        if state["rows"] and state.get("emtm_options", {}) != emtm_options:
            raise EmtmError(
                f"{out / 'ablation.json'} holds rows distilled with EMTM options "
                f"{state.get('emtm_options', {})}, not {emtm_options}: use another --out, or the same "
                "options to resume"
            )
        state["emtm_options"] = emtm_options
        # Rows of set i, for the seeds i, i + n, ...: the same names and keys in every set.
        rows_of = [
            list(ablation_rows(t, calibrated=calibrated[i] if calibrated else None))
            for i, t in enumerate(sets)
        ]
        all_rows = rows_of[0]
        for row in all_rows:  # states written before rows had stable keys get them
            if row.name in state["rows"]:
                state["rows"][row.name]["key"] = row.key
    unknown = sorted(r for r in rows or () if isinstance(r, str) and r not in {row.key for row in all_rows})
    if unknown:
        raise EmtmError(
            f"--rows: no row has the key(s) {', '.join(unknown)} with these teachers; the keys are "
            + ", ".join(row.key for row in all_rows)
        )
    dev = resolve_device(device)
    # Every row holds out the teachers' validation videos when their caches record them, so that rows
    # of one seed train on the same queries and validation never reads a query a teacher saw.
    # (Rows without teachers run even when the caches are not there yet.)
    holdouts = [teachers_holdout_seed(t) if all(Path(c).is_file() for c in t) else None for t in sets]
    elsewhere = []
    for index, first in enumerate(all_rows):
        if rows and first.group not in rows and first.key not in rows:
            continue
        for seed in range(seeds):
            which = seed % len(sets)
            row, holdout = rows_of[which][index], holdouts[which]
            run_dir = folder = seed_dir(out, row.name, seed)
            with claim(run_dir) as mine:
                if not mine:
                    elsewhere.append(f"{row.name}, seed {seed}")
                    continue
                recorded = read_state(out)["rows"].get(row.name, {})
                if str(seed) in recorded.get("seeds", {}):
                    if not (folder / QUERY_IOUS).is_file():  # recorded before the query IoUs were kept
                        saved_run = Path(recorded.get("runs", {}).get(str(seed), run_dir))  # or reused
                        done, preds = test_predictions(saved_run, data, seed, dev)
                        keep_query_ious(folder, preds, done.cfg.eval.protocol)
                    continue
                extra = {**emtm_options, **row.options, "n_teachers": len(row.teachers)}
                cfg = TrainConfig(
                    data=str(Path(data).resolve()),
                    model=row.model,
                    model_options=extra if row.model == "emtm" else dict(row.options),
                    teachers=row.teachers,
                    optim={"epochs": epochs, "lr": lr},
                    run={
                        "seed": seed,
                        "val_seed": holdout,
                        "device": device,
                        "progress": progress,
                        "threads": threads,
                    },
                )
                cfg = with_fitted_weights(cfg)  # as training would: same_training compares the fitted
                same = next((r for r in reuse if same_training(cfg, Path(r))), None)
                if same is not None:
                    print(f"  {row.name}, seed {seed}: the finished run {same} has this config, evaluated")
                    run_dir = Path(same)
                else:
                    train_step(cfg, run_dir)  # a run stopped part-way (a killed process) is resumed
                run, preds = test_predictions(run_dir, cfg.data, seed, dev)
                metrics = score_predictions(preds, run.cfg.eval.protocol)
                keep_query_ious(folder, preds, run.cfg.eval.protocol)
                r1, miou = metrics["r1@0.7"], metrics["miou"]
                print(f"  {row.name}, seed {seed}: test R1@0.7 {r1:.2f}, mIoU {miou:.2f}", flush=True)
                with locked_state(out) as state:
                    results = state["rows"].setdefault(row.name, {"seeds": {}})
                    results["key"] = row.key
                    results["seeds"][str(seed)] = metrics
                    if len(sets) > 1:
                        results.setdefault("teacher_set", {})[str(seed)] = which + 1
                    if same is not None:
                        results.setdefault("runs", {})[str(seed)] = str(Path(same).resolve())
                    results["params"] = count_student_params(run)  # inference runs the student path only
                    gflops = flops_per_query(run.model, run.spec.to_spec(), run.spec.max_video_len)
                    results["gflops"] = gflops / 1e9
    with locked_state(out) as state:
        fill_best_epochs(out, state)
        write_report(out, state)
    return state, elsewhere


def test_predictions(
    run_dir: Path, data: str | Path, seed: int, device: Any
) -> tuple[LoadedRun, SplitPredictions]:
    """The run's predictions on the test split of `data` (its best weights)."""
    run = load_run(run_dir, device=device)
    test = split_dataset(data, "test", run.vocab, seed)
    return run, predict_dataset(run.model, test, run.cfg.eval, device, batch_size=128)


def keep_query_ious(folder: Path, preds: SplitPredictions, protocol: str) -> None:
    """test_ious.json in the (row, seed) folder: each test query's top-1 IoU, for the bootstrap."""
    write_query_ious(folder, [s.sample_id for s in preds.samples], query_ious(preds, protocol))


# Run settings that change neither what is trained nor (beyond rounding) how: ignored by same_training.
INCIDENTAL_RUN_FIELDS = ("progress", "threads", "checkpoint_every", "dist_timeout_s")


def same_training(cfg: TrainConfig, run_dir: Path) -> bool:
    """Whether `run_dir` is a finished run trained with `cfg`: same data, model, options, teachers,
    optimiser, evaluation and seed (INCIDENTAL_RUN_FIELDS aside)."""
    saved = run_dir / "config.json"
    if not (saved.exists() and finished(run_dir, cfg.optim.epochs)):
        return False

    def essentials(config: TrainConfig, weights: list[str] | None = None) -> dict[str, Any]:
        dumped = config.model_dump(mode="json")
        for key in INCIDENTAL_RUN_FIELDS:
            dumped["run"].pop(key, None)
        dumped["model_options"] = resolved_options(config.model, config.model_options, weights)
        return dumped

    try:
        theirs = TrainConfig.model_validate(json.loads(saved.read_text())["train"])
        return essentials(theirs, weight_names(run_dir / "model.safetensors")) == essentials(cfg)
    except (KeyError, ValueError, ConfigError):
        return False


def read_state(out: Path) -> dict[str, Any]:
    path = out / "ablation.json"
    return json.loads(path.read_text()) if path.exists() else {"rows": {}}


@contextmanager
def locked_state(out: Path) -> Iterator[dict[str, Any]]:
    """ablation.json read and written back under an exclusive lock, shared by every process."""
    with lock_file(out / "ablation.lock"):
        state = read_state(out)
        before = json.dumps(state, sort_keys=True)
        yield state
        if json.dumps(state, sort_keys=True) != before:
            write_json(out / "ablation.json", state)


def parse_rows(text: str | None) -> set[int | str] | None:
    """'1,3,5' -> {1, 3, 5}: ablation row numbers in the paper's order (module docstring), or row keys
    ('emtm:fixed,fixed-best', `Row.key`), which `run_ablation` checks against the rows it has."""
    if not text:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise EmtmError(f"--rows {text!r}: expected row numbers 1-{N_ROWS} or row keys separated by commas")
    rows: set[int | str] = {int(part) if part.isdigit() else part for part in parts}
    numbers = {r for r in rows if isinstance(r, int)}
    if not numbers <= set(range(1, N_ROWS + 1)):
        raise EmtmError(f"--rows {text!r}: the ablation has rows 1-{N_ROWS}")
    return rows


def count_student_params(run: LoadedRun) -> int:
    if hasattr(run.model, "student_state_dict"):
        weights = run.model.student_state_dict()
        frozen = {"encoder.words.vectors"}
        return int(sum(v.numel() for k, v in weights.items() if k not in frozen))
    return count_parameters(run.model)["trainable"]
