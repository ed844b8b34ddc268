"""FLOPs and parameters per query of every registered model at the Charades, ActivityNet and TACoS shapes.

    python benchmarks/flops.py --out runs/bench/flops       # writes flops.json and flops.md

FLOPs = 2 x multiply-accumulates of one forward pass (torch.utils.flop_counter), batch 1, 8 words,
1024-d video features, a 1,300-word vocabulary of 50-d vectors, default model configs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from emtm.engine.flops import count_parameters, flops_per_query
from emtm.io import write_json, write_markdown_table
from emtm.models.base import DataSpec
from emtm.models.registry import build_model, model_config, model_names

SHAPES = {"charades": 64, "anet": 100, "tacos": 256}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench/flops")
    p.add_argument("--models", default="student,regress,proposals,seqpan,eamat,tan2d")
    args = p.parse_args()
    out = Path(args.out)
    torch.manual_seed(0)
    names = [m for m in args.models.split(",") if m in model_names() and m != "emtm"]
    results = {}
    for name in names:
        row = {}
        for shape, length in SHAPES.items():
            spec = DataSpec(1024, length, torch.randn(1300, 50), 60, 30)
            model = build_model(name, model_config(name), spec)
            row[shape] = flops_per_query(model, spec, length)
            if shape == "charades":
                row.update(count_parameters(model))
        results[name] = row
    write_json(out / "flops.json", results)
    base = results.get("student")
    columns = ["model", *(f"GFLOPs {s} (L={n})" for s, n in SHAPES.items()), "x student (charades)"]
    columns.append("trainable params (charades)")
    rows = [
        [
            name,
            *(f"{row[s] / 1e9:.3f}" for s in SHAPES),
            f"{row['charades'] / base['charades']:.1f}" if base else "-",
            f"{row['trainable'] / 1e6:.2f} M",
        ]
        for name, row in results.items()
    ]
    write_markdown_table(out / "flops.md", columns, rows)
    print((out / "flops.md").read_text())


if __name__ == "__main__":
    main()
