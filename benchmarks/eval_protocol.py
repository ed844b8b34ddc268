r"""How emtm's evaluation compares with the public Moment-DETR / Lighthouse evaluator's definitions.

A tiny student is trained on the tiny synthetic benchmark (its test split has 55 queries) and predicts
10 windows per test query. Then, on the same prediction file:

1. several ground-truth windows: 11 of the 55 queries get a second window (the model's top-1 window
   widened by 1 s on each side, clipped to the video); scored against the first window only (what emtm
   did before) and against all windows (emtm now: the public definitions, tests/test_multi_window.py);
2. ends past the duration: 19 of the 55 ends are pushed 5 s past the video's end; emtm's readers clip
   them to the duration, the public evaluator keeps them;
3. length buckets: relative to the video (emtm's) and in seconds (the public evaluator's);
4. on the real Charades-STA test annotations (when present): how many ends the reader clips, and how
   the queries fall into both kinds of buckets.

    .venv/bin/python benchmarks/eval_protocol.py --out runs/bench/eval-protocol
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from emtm.config import TrainConfig
from emtm.data import synth
from emtm.data.annotations import read_annotations
from emtm.engine.checkpoint import load_run
from emtm.engine.evaluate import SECONDS_BUCKETS, evaluation_report, score_predictions
from emtm.engine.metrics import grounding_metrics
from emtm.engine.predictions import predict_file, read_predictions, split_samples
from emtm.engine.train import train

KEYS = ("r1@0.3", "r1@0.5", "r1@0.7", "miou", "map", "map@0.5", "map@0.75")
CHARADES = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotations" / "charades_sta"


def jsonl_records(samples: list, windows: dict[int, list[list[float]]] | None = None) -> list[dict]:
    out = []
    for i, s in enumerate(samples):
        out.append({"qid": s.sample_id, "query": s.sentence, "vid": s.video_id, "duration": s.duration,
                    "relevant_windows": (windows or {}).get(i, [list(w) for w in s.windows])})  # fmt: skip
    return out


def write_records(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def row(metrics: dict) -> dict:
    return {k: round(metrics[k], 2) for k in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/bench/eval-protocol")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    data_yaml = out / "data" / "data.yaml"
    if not data_yaml.exists():
        data_yaml = synth.generate(synth.PRESETS["tiny"], out / "data", progress=False)
    run_dir = out / "run"
    if not (run_dir / "model.safetensors").exists():
        cfg = TrainConfig(
            data=str(data_yaml),
            model_options={"d": 32, "n_heads": 4},
            optim={"epochs": args.epochs, "batch_size": 16, "lr": 2e-3},
            run={"progress": False, "device": "cpu", "threads": 1},
        )
        train(cfg, run_dir)
    preds_file = out / "preds.jsonl"
    predict_file(load_run(run_dir, "model.safetensors", torch.device("cpu")), data_yaml, "test", preds_file,
                 torch.device("cpu"), top_k=10, progress=False)  # fmt: skip
    samples, _ = split_samples(data_yaml, "test")
    gt_file = write_records(out / "gt.jsonl", jsonl_records(samples))
    base = read_predictions(preds_file, gt_path=gt_file)
    report: dict = {"n_queries": len(samples), "single window": row(score_predictions(base))}

    # 1. a second window for every 5th query: the top-1 prediction widened by 1 s each side
    second = {}
    for i in range(0, len(samples), 5):
        s, (a, b) = samples[i], base.windows[i][0]
        second[i] = [list(samples[i].windows[0]), [max(0.0, a - 1.0), min(s.duration, b + 1.0)]]
    multi_file = write_records(out / "gt_two_windows.jsonl", jsonl_records(samples, second))
    multi = read_predictions(preds_file, gt_path=multi_file)
    first_only = grounding_metrics(
        multi.windows, [np.array(s.windows[:1]) for s in multi.samples], scores=multi.scores
    )
    report["second windows"] = {
        "n_queries_with_two": len(second),
        "first window only (emtm before)": row(first_only),
        "all windows (emtm now = public definitions)": row(score_predictions(multi)),
    }

    # 2. every 3rd end pushed 5 s past the video's end
    pushed = {i: [[samples[i].start, samples[i].duration + 5.0]] for i in range(0, len(samples), 3)}
    past_records = jsonl_records(samples, pushed)
    past_file = write_records(out / "gt_ends_past.jsonl", past_records)
    clipped = read_predictions(preds_file, gt_path=past_file)
    unclipped = grounding_metrics(clipped.windows, [np.array(r["relevant_windows"]) for r in past_records],
                                  scores=clipped.scores)  # fmt: skip
    report["ends past the duration"] = {
        "n_ends_past": len(pushed),
        "clipped to the duration (emtm)": row(score_predictions(clipped)),
        "kept (public evaluator)": row(unclipped),
    }

    # 3. both kinds of length buckets on the single-window file
    full = evaluation_report(base, breakdown=True)
    report["buckets"] = {
        "relative (emtm: < 1/3, 1/3-2/3, > 2/3 of the video)": {
            k: {"n_queries": v["n_queries"], "r1@0.5": round(v["r1@0.5"], 2)}
            for k, v in full["breakdown"].items()
        },
        "seconds (public: <= 10, 10-30, 30-150 s)": {
            k: {"n_queries": v["n_queries"], "r1@0.5": round(v["r1@0.5"], 2)}
            for k, v in full["breakdown_seconds"].items()
        },
    }

    # 4. the real Charades-STA test annotations
    if (CHARADES / "charades_sta_test.txt").exists():
        real, real_report = read_annotations(
            CHARADES / "charades_sta_test.txt", "charades_sta", CHARADES / "charades_durations.json"
        )
        ratio = np.array([(s.end - s.start) / s.duration for s in real])
        length = np.array([s.end - s.start for s in real])
        report["charades-sta test"] = {
            "n_queries": len(real),
            "ends clipped to the duration": real_report.n_ends_clipped,
            "relative buckets": {
                "short": int((ratio < 1 / 3).sum()),
                "medium": int(((ratio >= 1 / 3) & (ratio <= 2 / 3)).sum()),
                "long": int((ratio > 2 / 3).sum()),
            },  # fmt: skip
            "seconds buckets": {
                k: int(((length > lo) & (length <= hi)).sum()) for k, (lo, hi) in SECONDS_BUCKETS.items()
            },
        }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
