r"""A trained model's accuracy on a real split at each inference precision: does the fast path cost
any R1?

    python benchmarks/precision_agreement.py --model runs/emtm/student --data D.yaml --split test \
        --variants fp32,bf16,bf16+cast [--device cuda] [--compile default] --out DIR

Each variant is `emtm predict`'s own path (`--precision P [--cast] [--compile MODE]`) over the whole
split, written to DIR/preds_VARIANT.jsonl, then scored as `emtm evaluate --preds` scores it. The
first variant is the reference: every other row gives the share of queries whose top-1 moment is
the same and the change of each metric. The time column is the wall time of the whole prediction
(reading features, batching, decoding and writing included; the first call's compiling too).
Writes DIR/precision_agreement.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from emtm.cli import main as emtm_main
from emtm.engine.evaluate import score_predictions
from emtm.engine.predictions import read_predictions
from emtm.errors import EmtmError
from emtm.io import write_json, write_markdown_table

METRICS = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")


def predict_args(
    variant: str, model: str, data: str, split: str, out: Path, device: str, compile: str | None
):
    """The `emtm predict` arguments of a variant: a precision, '+cast' for cast weights."""
    precision, _, cast = variant.partition("+")
    if precision not in ("fp32", "fp16", "bf16") or cast not in ("", "cast"):
        raise EmtmError(f"variant {variant!r}: use fp32, fp16, bf16, fp16+cast or bf16+cast")
    args = ["predict", "--model", model, "--data", data, "--split", split, "--out", str(out)]
    args += ["--device", device, "--precision", precision, "--no-progress"]
    if cast:
        args.append("--cast")
    if compile:
        args += ["--compile", compile]
    return args


def compare(
    variants: list[str], results: dict[str, dict[str, Any]], tops: dict[str, dict]
) -> list[list[Any]]:
    """Table rows: each variant's metrics, its change against the first, and its same-top-1 share."""
    reference = variants[0]
    rows = []
    for name in variants:
        metrics = results[name]["metrics"]
        same = sum(tops[name][q] == w for q, w in tops[reference].items()) / len(tops[reference])
        results[name]["same_top1"] = same
        deltas = {m: metrics[m] - results[reference]["metrics"][m] for m in METRICS}
        results[name]["delta"] = deltas
        rows.append(
            [
                name,
                *(f"{metrics[m]:.2f}" for m in METRICS),
                "-" if name == reference else f"{deltas['r1@0.7']:+.2f}",
                "-" if name == reference else f"{same:.2%}",
                f"{results[name]['seconds']:.1f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a run directory or an exported model folder")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--variants", default="fp32,bf16,bf16+cast", help="the first is the reference")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", help="torch.compile mode for every variant but an fp32 reference")
    parser.add_argument("--out", default="runs/bench/precision")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results: dict[str, dict[str, Any]] = {}
    tops = {}
    for i, name in enumerate(variants):
        path = out / f"preds_{name.replace('+', '_')}.jsonl"
        compile = None if (i == 0 and name == "fp32") else args.compile  # the fp32 reference runs eager
        started = time.perf_counter()
        code = emtm_main(predict_args(name, args.model, args.data, args.split, path, args.device, compile))
        if code != 0:
            print(f"precision_agreement: emtm predict failed for {name} (exit {code})", file=sys.stderr)
            return code
        seconds = time.perf_counter() - started
        preds = read_predictions(path, args.data, args.split)
        results[name] = {
            "metrics": score_predictions(preds),
            "seconds": seconds,
            "compile": compile,
            "preds": str(path),
        }
        tops[name] = {s.sample_id: tuple(w[0]) for s, w in zip(preds.samples, preds.windows, strict=True)}
    columns = ["variant", *METRICS, "Δ r1@0.7", "same top-1", "predict s"]
    rows = compare(variants, results, tops)
    n_queries = len(tops[variants[0]])
    title = f"{args.model} on {args.split} of {args.data} ({n_queries} queries, --device {args.device})"
    write_json(out / "precision_agreement.json", {"model": args.model, "data": args.data, "split": args.split,
                                                   "device": args.device, "variants": results})  # fmt: skip
    write_markdown_table(out / "precision_agreement.md", columns, rows, title)
    print((out / "precision_agreement.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
