r"""Pack what a lent GPU machine needs for gpu_session.sh's accuracy step into .gpu/ (git-ignored;
carried with the call): a trained student folder and one split of its data, features in fp16.

    python benchmarks/gpu_payload.py --model runs/bench/distill-hard-t20s1/emtm/student \
        --data runs/bench/distill-hard/data/data.yaml --split test --out .gpu

Writes OUT/student_hard (config.json, model.safetensors, vocab.json, metrics.json when there) and
OUT/hard_test: data.yaml (the split as both train and test, no word vectors: predicting needs only
the model's own vocabulary and weights), the split's annotation file, its videos' durations and
features (VSLNet-style .npy, fp16: half the bytes to carry; tiny changes to R1, see
docs/BENCHMARKS.md). Only charades_sta data folders with .npy features are handled.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from emtm.config import load_data_config
from emtm.errors import EmtmError


def pack(model: Path, data_yaml: Path, split: str, out: Path) -> tuple[Path, Path]:
    cfg = load_data_config(data_yaml)
    if cfg.format != "charades_sta" or split not in cfg.splits:
        raise EmtmError(f"{data_yaml}: needs format charades_sta and a {split!r} split")
    run_out, data_out = out / "student_hard", out / f"hard_{split}"
    run_out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "vocab.json", "metrics.json"):
        if (model / name).exists():
            shutil.copy(model / name, run_out / name)
    (data_out / "features").mkdir(parents=True, exist_ok=True)
    annotations = cfg.resolve(cfg.splits[split])
    lines = [line for line in annotations.read_text().splitlines() if line.strip()]
    videos = sorted({line.split()[0] for line in lines})
    features = cfg.resolve(cfg.features)
    for video in videos:
        array = np.load(features / f"{video}.npy")
        np.save(data_out / "features" / f"{video}.npy", array.astype(np.float16))
    durations = json.loads(cfg.resolve(cfg.durations).read_text())
    (data_out / "durations.json").write_text(json.dumps({v: durations[v] for v in videos}))
    (data_out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (data_out / "data.yaml").write_text(
        f"format: charades_sta\nsplits:\n  train: {split}.txt\n  test: {split}.txt\n"
        f"durations: durations.json\nfeatures: features\nmax_video_len: {cfg.max_video_len}\n"
    )
    return run_out, data_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained student: run or exported folder")
    parser.add_argument("--data", required=True, help="its data.yaml")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=".gpu")
    args = parser.parse_args(argv)
    run_out, data_out = pack(Path(args.model), Path(args.data), args.split, Path(args.out))
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(f"wrote {run_out} and {data_out} ({size / 2**20:.1f} MiB in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
