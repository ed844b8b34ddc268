"""Bounded memory on large data: a synthetic dataset of about 220,000 train queries over 50,000 videos,
1024-d features in one HDF5 file written in chunks (about 6 GB), then one epoch of the student on CPU
with multi-worker loading. Reports the peak resident memory of the whole process tree (main process +
loader workers, sampled from /proc) and the training throughput. Writes memory.json and memory.md.

    python benchmarks/memory.py --out runs/bench/memory                      # full size
    python benchmarks/memory.py --out runs/bench/memory-small --videos 5000  # a 10x smaller check

Features are read lazily (one video per item): the feature file never has to fit in memory.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import threading
import time
from pathlib import Path

from emtm.config import TrainConfig
from emtm.data import synth
from emtm.engine.train import train
from emtm.io import write_json, write_markdown_table


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as status:
                total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as children:
                    todo += [int(c) for c in children.read().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue  # the process ended while we looked
    return total


class PeakSampler(threading.Thread):
    """Samples the process tree's RSS every `interval` seconds and keeps the peak."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.peak, self.stop = interval, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(os.getpid()))
            self.stop.wait(self.interval)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--videos", type=int, default=50_000, help="train videos (test: 2%% of that)")
    p.add_argument("--dim", type=int, default=1024, help="feature dimension")
    p.add_argument("--workers", type=int, default=2, help="data-loader worker processes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    out = Path(args.out)
    cfg = synth.SynthConfig(
        n_train_videos=args.videos,
        n_test_videos=max(1, args.videos // 50),
        feature_dim=args.dim,
        min_events=4,
        train_queries_per_video=4.5,
    )
    yaml_path = out / "data" / "data.yaml"
    started = time.perf_counter()
    if not yaml_path.exists():
        synth.generate(cfg, out / "data", feature_format="h5")
    synth_seconds = time.perf_counter() - started
    feature_bytes = (out / "data" / "features.h5").stat().st_size
    n_train = sum(1 for _ in (out / "data" / "train.txt").open())

    train_cfg = TrainConfig(
        data=str(yaml_path.resolve()),
        model="student",
        optim={"epochs": 1, "batch_size": args.batch_size, "lr": 1e-3},
        run={"num_workers": args.workers, "threads": args.threads, "device": "cpu"},
    )
    sampler = PeakSampler()
    sampler.start()
    started = time.perf_counter()
    train(train_cfg, out / "run")
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    with (out / "run" / "log.csv").open(newline="") as handle:
        epoch_seconds = float(next(csv.DictReader(handle))["seconds"])
    splits = json.loads((out / "run" / "config.json").read_text())["splits"]
    result = {
        "train_queries_in_file": n_train,
        "train_queries_trained": splits["train"]["n_queries"],
        "val_queries": splits["val"]["n_queries"],
        "videos": args.videos,
        "feature_dim": args.dim,
        "hdf5_gb": round(feature_bytes / 1e9, 2),
        "synth_seconds": round(synth_seconds, 1),
        "workers": args.workers,
        "threads": args.threads,
        "epoch_seconds": epoch_seconds,
        "samples_per_s": round(splits["train"]["n_queries"] / epoch_seconds, 1),  # epoch time includes val
        "wall_seconds": round(wall, 1),
        "peak_rss_gb_process_tree": round(sampler.peak / 1e9, 3),
    }
    write_json(out / "memory.json", result)
    write_markdown_table(out / "memory.md", ["quantity", "value"], [[k, v] for k, v in result.items()])
    for key, value in result.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
