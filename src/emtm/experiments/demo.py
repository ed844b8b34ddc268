"""`make demo`: the main job on built-in data. Synthesise a benchmark, train three teachers of different
output forms, cache their outputs, train the student alone and the EMTM student distilled from them,
evaluate every model on the test split, print one table and draw qualitative figures.

`compare_models` is shared with `benchmarks/foundation.py`, which runs the same comparison at full size.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from emtm.config import OptimConfig, TrainConfig
from emtm.data.dataset import split_dataset
from emtm.device import num_threads, resolve_device
from emtm.engine.checkpoint import load_run
from emtm.engine.evaluate import evaluate
from emtm.engine.train import train
from emtm.errors import EmtmError
from emtm.experiments.pipeline import REPORT_COLUMNS, Plan, Stage, report_rows, run_pipeline, write_figures
from emtm.extract.pixel_benchmark import generate_preset
from emtm.io import write_json, write_markdown_table

# Two demos (README has the measured times on 2 CPU cores):
# * quick, the default: real pixels (small-pixels), two teachers of two output forms, short training;
# * full (`--full`): the synthetic small preset, three teachers, 8 epochs each.
DEMO_EPOCHS = 8
QUICK_EPOCHS = 6
QUICK_TEACHERS: dict[str, tuple[int, dict[str, Any]]] = {
    "proposals": (QUICK_EPOCHS, {}),
    "regress": (QUICK_EPOCHS, {}),
}
# KD weight of the demo's EMTM student, chosen on the validation split among the paper's variants
# (benchmarks/distill_variants.py on the demo's teachers, docs/RESULTS.md): 3.2 = 0.1 x 32, the method's
# 0.1 on a batch-summed KL at this batch size, and the config default (emtm.distill.model).
DEMO_KD_WEIGHT = 3.2
DEMO_TEACHERS: dict[str, tuple[int, dict[str, Any]]] = {
    "seqpan": (DEMO_EPOCHS, {"d": 128}),
    "proposals": (DEMO_EPOCHS, {}),
    "regress": (DEMO_EPOCHS, {}),
}
TABLE_METRICS = ("r1@0.3", "r1@0.5", "r1@0.7", "r5@0.5", "miou")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def compare_models(
    yaml_path: Path,
    out: Path,
    models: dict[str, dict[str, Any]],
    device: str = "auto",
    seed: int = 0,
    title: str = "",
    threads: int | None = None,
) -> dict[str, Any]:
    """Train each model on the data.yaml, evaluate on its test split, print and write one table."""
    from emtm.console import print_table

    dev = resolve_device(device)
    results: dict[str, Any] = {"data": str(yaml_path), "device": device_name(dev), "seed": seed, "models": {}}
    with num_threads(threads):  # restored afterwards
        for name, settings in models.items():
            print(f"\n== {name}: training {settings['epochs']} epoch(s) on {results['device']}")
            cfg = TrainConfig(
                data=str(Path(yaml_path).resolve()),
                model=name,
                model_options=settings.get("options", {}),
                optim={"epochs": settings["epochs"], "lr": settings.get("lr", 5e-4)},
                run={
                    "device": device,
                    "seed": seed,
                    "num_workers": settings.get("workers", 0),
                    "threads": threads,
                },
            )
            started = time.perf_counter()
            train(cfg, out / name, overwrite=True)  # a benchmark: each call trains afresh
            seconds = time.perf_counter() - started
            run = load_run(out / name, device=dev)
            test_set = split_dataset(cfg.data, "test", run.vocab, seed)
            metrics = evaluate(run.model, test_set, run.cfg.eval, dev, batch_size=128)
            results["models"][name] = {
                **metrics,
                "epochs": settings["epochs"],
                "train_seconds": round(seconds, 1),
                "params": run.model.n_trainable,
            }
    columns = ["model", *TABLE_METRICS, "params", "epochs", "train s"]
    rows = [
        [name, *[m[k] for k in TABLE_METRICS], m["params"], m["epochs"], m["train_seconds"]]
        for name, m in results["models"].items()
    ]
    n_test = next(iter(results["models"].values()))["n_queries"]
    write_json(out / "results.json", results)
    title = f"{title} test split, {n_test} queries, raw-time IoU (%), {results['device']}"
    print_table(title, columns, rows)
    write_markdown_table(out / "results.md", columns, rows, title)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}; training curves in {out}/*/curve.png")
    return results


def demo_plan(epochs: int | None = None, full: bool = True) -> Plan:
    """Teachers of several output forms, the student alone and EMTM, sized for 2 CPU cores: the full
    demo's three teachers at 8 epochs, or the quick demo's two at 6."""
    teachers, student_epochs = (DEMO_TEACHERS, DEMO_EPOCHS) if full else (QUICK_TEACHERS, QUICK_EPOCHS)

    def stage(model: str, default_epochs: int, **options: Any) -> Stage:
        return Stage(model, options, OptimConfig(epochs=epochs or default_epochs, lr=1e-3))

    return Plan(
        baselines={"prior": Stage("prior", {}, OptimConfig(epochs=1))},
        teachers={name: stage(name, n, **options) for name, (n, options) in teachers.items()},
        student=stage("student", student_epochs),
        emtm_options={"kd_weight": DEMO_KD_WEIGHT},
    )


def written_preset(yaml_path: Path) -> str | None:
    """The preset a built-in benchmark's data.yaml was written from (None: not a preset)."""
    import yaml

    data = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    return (data.get("synth") or data.get("pixels") or {}).get("preset")


def run_demo(
    out: Path,
    preset: str | None = None,
    epochs: int | None = None,
    data_dir: Path | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """teachers -> export -> distill -> evaluate on a built-in benchmark, one table at the end: the quick
    demo (default preset small-pixels) or, with `full`, the full one (default preset small)."""
    from emtm.console import print_kau_summary, print_table

    preset = preset or ("small" if full else "small-pixels")
    data_dir = data_dir or Path("data") / f"synth-{preset}"
    yaml_path = data_dir / "data.yaml"
    if yaml_path.exists():
        found = written_preset(yaml_path)
        if found != preset:
            raise EmtmError(
                f"{yaml_path} holds the preset {found!r}, not {preset!r}: delete {data_dir} or pass another "
                "--data-dir"
            )
        print(f"using the built-in benchmark in {data_dir} (delete it to regenerate)")
    else:
        print(f"writing the built-in benchmark (preset {preset!r}) to {data_dir}")
        generate_preset(preset, data_dir)
    plan = demo_plan(epochs, full)
    sizes = ", ".join(
        f"{n} {s.optim.epochs} ep" for n, s in {**plan.teachers, "student": plan.student}.items()
    )
    kind, other = (
        ("full", "the quick one: emtm demo") if full else ("quick", "the full one: emtm demo --full")
    )
    print(
        f"{kind} demo: preset {preset!r}, short training ({sizes}; EMTM as the student, KD weight "
        f"{DEMO_KD_WEIGHT}); {other}; full-size runs: benchmarks/"
    )
    started = time.perf_counter()
    report = run_pipeline(plan, yaml_path, out)
    print("qualitative figures (test queries where EMTM beats the student alone, and where it does not):")
    write_figures(out, yaml_path)
    device = next(iter(report.values()))["device"]
    n_test = next(iter(report.values()))["n_queries"]
    print_table(
        f"synth-{preset} test split, {n_test} queries, raw-time IoU (%), {device_name(torch.device(device))}",
        REPORT_COLUMNS,
        report_rows(report),
    )
    kau = out / "emtm" / "kau.json"
    if kau.exists():
        print_kau_summary(json.loads(kau.read_text()))
    print(f"wrote {out / 'report.md'}, report.json and figures/ in {time.perf_counter() - started:.0f} s")
    return report
