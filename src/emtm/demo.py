"""`make demo`: the main job on built-in data. Synthesise a benchmark, train the baselines and the
student, evaluate them all on the test split, and print one table (also written as JSON and markdown).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from emtm.config import TrainConfig
from emtm.data import synth
from emtm.engine.checkpoint import load_run
from emtm.engine.evaluate import evaluate
from emtm.engine.train import resolve_device, train
from emtm.io import atomic_open, write_json

# Sized so the whole demo fits in about 10 minutes on 2 CPU cores (see README for measured times).
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "prior": {"epochs": 1},
    "meanpool": {"epochs": 15, "lr": 1e-3},
    "student": {"epochs": 12, "lr": 1e-3},
}
METRICS = ("r1@0.3", "r1@0.5", "r1@0.7", "r5@0.5", "miou")


def ensure_dataset(data_dir: Path, preset: str) -> Path:
    yaml_path = data_dir / "data.yaml"
    if yaml_path.exists():
        print(f"using the synthetic benchmark in {data_dir} (delete it to regenerate)")
        return yaml_path
    print(f"writing the synthetic benchmark (preset {preset!r}) to {data_dir}")
    return synth.generate(synth.PRESETS[preset], data_dir)


def run_demo(
    out: Path, preset: str = "small", epochs: int | None = None, data_dir: Path | None = None
) -> dict:
    from emtm.cli import print_table

    data_dir = data_dir or Path("data") / f"synth-{preset}"
    yaml_path = ensure_dataset(data_dir, preset)
    device = resolve_device("auto")
    results: dict[str, Any] = {"preset": preset, "device": str(device), "models": {}}
    for name, settings in DEMO_MODELS.items():
        n_epochs = epochs if epochs is not None and name != "prior" else settings["epochs"]
        print(f"\n== {name}: training {n_epochs} epoch(s) on {device}")
        cfg = TrainConfig(
            data=str(yaml_path.resolve()),
            model=name,
            optim={"epochs": n_epochs, "lr": settings.get("lr", 5e-4)},
        )
        started = time.perf_counter()
        train(cfg, out / name)
        seconds = time.perf_counter() - started
        run = load_run(out / name, device=device)
        test_set = _test_dataset(run, cfg)
        metrics = evaluate(run.model, test_set, run.cfg.eval, device, batch_size=128)
        results["models"][name] = {
            **metrics,
            "train_seconds": round(seconds, 1),
            "params": run.model.n_trainable,
        }
    rows = [
        [name, *[m[k] for k in METRICS], m["params"], m["train_seconds"]]
        for name, m in results["models"].items()
    ]
    columns = ["model", *METRICS, "params", "train s"]
    n_test = next(iter(results["models"].values()))["n_queries"]
    print_table(f"test split of synth-{preset} ({n_test} queries, raw-time IoU, %)", columns, rows)
    write_json(out / "results.json", results)
    with atomic_open(out / "results.md") as handle:
        handle.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
        for row in rows:
            handle.write(
                "| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |\n"
            )
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}; curves in {out}/*/curve.png")
    return results


def _test_dataset(run, cfg: TrainConfig):
    from emtm.config import load_data_config
    from emtm.data.dataset import GroundingDataset, prepare

    data_cfg = load_data_config(cfg.data)
    prepared = prepare(data_cfg, cfg.run.seed, names=("test",))
    return GroundingDataset(prepared.splits["test"].samples, prepared.store, run.vocab, data_cfg)
