"""How high a model can go on a synthetic preset: the score of an oracle that knows every event's span.

    python benchmarks/synth_ceiling.py --presets default,relational --out runs/bench/ceiling

The written moment of a query is its event's true span plus annotation noise on each boundary
(`boundary_jitter`), so even a model that finds the event exactly does not reach 100 R1@0.7. Two
oracles, scored with the evaluator's metrics against the written moments of the test split:

- `event span`: the event's true start and end;
- `event span, whole clips`: the same, rounded to whole clips (1 s), the resolution a model predicts at.

Only the scripts are generated (no features), so this takes seconds. Writes ceiling.json and ceiling.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from emtm.data.synth import PRESETS, SynthConfig, make_scripts
from emtm.engine.metrics import grounding_metrics
from emtm.io import write_json, write_markdown_table

METRICS = ("r1@0.3", "r1@0.5", "r1@0.7", "miou")


def oracle_metrics(cfg: SynthConfig, split: str = "test") -> dict[str, dict[str, float]]:
    """Metrics of the two oracles on one split of the benchmark ``cfg`` describes."""
    scripts = make_scripts(cfg)[split]
    written, spans = [], []
    for video in scripts:
        for query in video.queries:
            event = video.events[query.event]
            written.append((query.start, query.end))
            spans.append((event.start, event.end))
    gt, exact = np.array(written), np.array(spans)
    rounded = np.round(exact)
    rounded[:, 1] = np.maximum(rounded[:, 1], rounded[:, 0] + 1)  # at least one clip
    return {
        "event span": grounding_metrics([w[None] for w in exact], gt, top_ks=(1,)),
        "event span, whole clips": grounding_metrics([w[None] for w in rounded], gt, top_ks=(1,)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="default,relational", help="comma-separated synthetic presets")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default="runs/bench/ceiling")
    args = p.parse_args()
    unknown = sorted(set(args.presets.split(",")) - set(PRESETS))
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    results = {name: oracle_metrics(PRESETS[name], args.split) for name in args.presets.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ceiling.json", results)
    rows = [
        [preset, oracle, int(m["n_queries"])] + [m[k] for k in METRICS]
        for preset, oracles in results.items()
        for oracle, m in oracles.items()
    ]
    write_markdown_table(
        out / "ceiling.md",
        ["preset", "oracle", "queries", *METRICS],
        rows,
        title=f"oracle ceiling, {args.split} split (IoU against the written, jittered moments)",
    )
    print((out / "ceiling.md").read_text())


if __name__ == "__main__":
    main()
