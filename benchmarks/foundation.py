r"""Full-size comparison behind the README's numbers: prior vs mean-pool regressor vs EMTM student.

    python benchmarks/foundation.py --preset default --out runs/bench/default            # built-in benchmark
    python benchmarks/foundation.py --charades ../shared/data/annotations/charades_sta \
        --out runs/bench/charades                                                        # real annotations

Writes results.json and results.md (one table) in --out. Uses the GPU when there is one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from emtm.data import synth
from emtm.experiments.demo import compare_models
from emtm.io import atomic_open


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", help="synthetic preset (ignored with --charades)")
    p.add_argument("--charades", help="folder with charades_sta_{train,test}.txt and charades_durations.json")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=30, help="epochs for meanpool and the student")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    p.add_argument("--word-vectors", help="override data.yaml's word_vectors (e.g. a GloVe .txt path)")
    args = p.parse_args()
    out = Path(args.out)
    if args.charades:
        folder = Path(args.charades)
        yaml_path = synth.synthesize_features_for_annotations(
            [folder / "charades_sta_train.txt", folder / "charades_sta_test.txt"],
            "charades_sta",
            out / "data",
            durations=folder / "charades_durations.json",
        )
        title = "Charades-STA annotations with synthetic features:"
    else:
        yaml_path = synth.generate(synth.PRESETS[args.preset], out / "data")
        title = f"synth-{args.preset}:"
    if args.word_vectors:
        raw = yaml.safe_load(yaml_path.read_text())
        raw["word_vectors"] = str(Path(args.word_vectors).resolve())
        with atomic_open(yaml_path) as handle:
            yaml.safe_dump(raw, handle, sort_keys=False)
    models = {
        "prior": {"epochs": 1},
        "meanpool": {"epochs": args.epochs, "lr": args.lr, "workers": args.workers},
        "student": {"epochs": args.epochs, "lr": args.lr, "workers": args.workers},
    }
    compare_models(
        yaml_path, out / "runs", models, device=args.device, seed=args.seed, title=title, threads=args.threads
    )


if __name__ == "__main__":
    main()
