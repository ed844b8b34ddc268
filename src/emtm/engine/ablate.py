"""The paper's ablation table (`emtm ablate`): each row trained over several seeds, mean ± std.

Rows: student alone; student + each single teacher; + the mean of the teachers; + KAU; + KAU and the
shared encoder (full EMTM); full EMTM with 1..K teachers; full EMTM with d in {32, 64, 128}.
Resumable: every finished (row, seed) is stored in ablation.json and never recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emtm.bench.flops import count_parameters, flops_per_query
from emtm.config import TrainConfig
from emtm.data.dataset import split_dataset
from emtm.engine.checkpoint import load_run
from emtm.engine.evaluate import evaluate
from emtm.engine.train import resolve_device, train
from emtm.io import write_json, write_markdown_table

REPORTED = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")
DISTILL_ONLY = {"isomorphic": False, "use_kau": False}


@dataclass
class Row:
    name: str
    model: str
    teachers: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def ablation_rows(teachers: list[str], dims: tuple[int, ...] = (32, 64, 128)) -> Iterator[Row]:
    names = [Path(t).stem for t in teachers]
    yield Row("student alone", "student")
    for path, name in zip(teachers, names):
        yield Row(f"student + {name}", "emtm", [path], dict(DISTILL_ONLY))
    if len(teachers) > 1:
        yield Row("student + mean of teachers", "emtm", teachers, dict(DISTILL_ONLY))
    yield Row("student + KAU", "emtm", teachers, {"isomorphic": False})
    yield Row("student + KAU + shared encoder (EMTM)", "emtm", teachers)
    for k in range(1, len(teachers)):
        yield Row(f"EMTM, {k} teacher(s): {', '.join(names[:k])}", "emtm", teachers[:k])
    for d in dims:
        if d != 128:
            yield Row(f"EMTM, d={d}", "emtm", teachers, {"d": d})


def run_ablation(
    data: Path,
    teachers: list[str],
    out: Path,
    seeds: int = 3,
    epochs: int = 20,
    lr: float = 1e-3,
    device: str = "auto",
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "ablation.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"rows": {}}
    dev = resolve_device(device)
    for row in ablation_rows([str(Path(t).resolve()) for t in teachers]):
        results = state["rows"].setdefault(row.name, {"seeds": {}})
        for seed in range(seeds):
            if str(seed) in results["seeds"]:
                continue
            run_dir = out / slug(row.name) / f"seed{seed}"
            options = {**row.options, **({"n_teachers": len(row.teachers)} if row.model == "emtm" else {})}
            cfg = TrainConfig(
                data=str(Path(data).resolve()),
                model=row.model,
                model_options=options,
                teachers=row.teachers,
                optim={"epochs": epochs, "lr": lr},
                run={"seed": seed, "device": device, "progress": False},
            )
            train(cfg, run_dir)
            run = load_run(run_dir, device=dev)
            test = split_dataset(cfg.data, "test", run.vocab, seed)
            results["seeds"][str(seed)] = evaluate(run.model, test, run.cfg.eval, dev, batch_size=128)
            results["params"] = count_student_params(run)  # inference runs the student path only
            results["gflops"] = flops_per_query(run.model, run.spec.to_spec(), run.spec.max_video_len) / 1e9
            write_json(state_path, state)
    write_report(out, state)
    return state


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def count_student_params(run) -> int:
    if hasattr(run.model, "student_state_dict"):
        weights = run.model.student_state_dict()
        frozen = {"encoder.words.vectors"}
        return int(sum(v.numel() for k, v in weights.items() if k not in frozen))
    return count_parameters(run.model)["trainable"]


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    seeds = list(results["seeds"].values())
    summary = {"n_seeds": len(seeds), "params": results.get("params"), "gflops": results.get("gflops")}
    for key in REPORTED:
        values = np.array([s[key] for s in seeds])
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary[key] = {"mean": float(values.mean()), "std": std}
    return summary


SUMMARY_COLUMNS = ["row", *REPORTED, "params (M)", "GFLOPs/query", "seeds"]


def summary_rows(state: dict[str, Any]) -> list[list[Any]]:
    """One table row per finished ablation row: metrics as mean ± std over seeds."""
    rows = []
    for name, results in state["rows"].items():
        if results["seeds"]:
            s = summarise(results)
            cells = [f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f}" for k in REPORTED]
            rows.append([name, *cells, f"{s['params'] / 1e6:.3f}", f"{s['gflops']:.3f}", s["n_seeds"]])
    return rows


def write_report(out: Path, state: dict[str, Any]) -> None:
    summaries = {name: summarise(r) for name, r in state["rows"].items() if r["seeds"]}
    write_json(out / "ablation_summary.json", summaries)
    write_markdown_table(out / "ablation.md", SUMMARY_COLUMNS, summary_rows(state))
