"""Every registered model on the GPU gives the CPU's answers, and the same answer alone as padded.

    python benchmarks/device_parity.py --out runs/parity [--device cuda] [--length 64]

For each model of the registry (default config, seeded weights, eval mode) and one batch of queries
of different video and query lengths (padded, with masks):
* CPU fp32 vs DEVICE fp32 (TF32 off): the largest relative difference of any float output
  (max |a - b| / max |a|), and the share of queries with the same top-1 window;
* on DEVICE, each query alone vs inside the padded batch: the largest difference of its top-5
  windows (fractions of the video), which must be ~0.
Writes DIR/device_parity.json and DIR/device_parity.md and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emtm.data.dataset import collate
from emtm.experiments.bench.runner import MAX_QUERY_LEN, N_CHARS, VOCAB_SIZE, WORD_DIM
from emtm.io import write_json
from emtm.models.base import DataSpec
from emtm.models.registry import build_model, model_config, model_names

VIDEO_LENGTHS = (64, 40, 17, 64, 5, 33, 50, 9)
QUERY_LENGTHS = (8, 3, 12, 5, 9, 2, 7, 4)


def make_items(length: int, video_dim: int, seed: int = 0) -> list[dict[str, Any]]:
    g = np.random.default_rng(seed)
    items = []
    for i, (n_clips, n_words) in enumerate(zip(VIDEO_LENGTHS, QUERY_LENGTHS)):
        n_clips = min(n_clips, length)
        items.append(
            {
                "index": i,
                "video": g.standard_normal((n_clips, video_dim)).astype(np.float32),
                "words": g.integers(2, VOCAB_SIZE, n_words).tolist(),
                "chars": [g.integers(2, N_CHARS, g.integers(2, 9)).tolist() for _ in range(n_words)],
                "start_index": 0,
                "end_index": n_clips - 1,
                "start_frac": 0.0,
                "end_frac": 1.0,
                "duration": float(n_clips),
            }
        )
    return items


def run(model, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[dict, torch.Tensor]:
    batch = {k: v.to(device) for k, v in batch.items()}
    outputs = model(batch)
    windows = model.predict(outputs, batch, top_k=5).windows
    return {k: v.float().cpu() for k, v in outputs.items() if v.is_floating_point()}, windows.cpu()


def check_model(name: str, spec: DataSpec, items: list[dict], device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(name, model_config(name), spec).eval()
    batch = collate(items)
    cpu_out, cpu_windows = run(model, batch, torch.device("cpu"))
    model = model.to(device)
    dev_out, dev_windows = run(model, batch, device)
    rel = 0.0
    for key, ref in cpu_out.items():
        if ref.shape != dev_out[key].shape:
            continue
        finite = torch.isfinite(ref) & torch.isfinite(dev_out[key])
        scale = ref[finite].abs().max().clamp_min(1e-12)
        rel = max(rel, float((ref[finite] - dev_out[key][finite]).abs().max() / scale))
    same_top1 = float((cpu_windows[:, 0] - dev_windows[:, 0]).abs().amax(-1).lt(1e-4).float().mean())
    alone_diff = 0.0
    for i, item in enumerate(items):
        _, alone = run(model, collate([item]), device)
        alone_diff = max(alone_diff, float((alone[0] - dev_windows[i]).abs().max()))
    return {
        "model": name,
        "max_rel_diff_cpu_vs_device": rel,
        "same_top1": same_top1,
        "alone_vs_padded": alone_diff,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/device_parity")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--length", type=int, default=64, help="max_video_len of the models")
    parser.add_argument("--video-dim", type=int, default=1024)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    words = torch.randn(VOCAB_SIZE, WORD_DIM, generator=torch.Generator().manual_seed(0))
    words[:2] = 0.0
    spec = DataSpec(args.video_dim, args.length, words, N_CHARS, MAX_QUERY_LEN)
    items = make_items(args.length, args.video_dim)
    rows = []
    with torch.inference_mode():
        for name in model_names():
            try:
                rows.append(check_model(name, spec, items, device))
            except Exception as err:  # noqa: BLE001 - a model that cannot be built plainly is a row saying why
                rows.append({"model": name, "error": f"{type(err).__name__}: {err}"[:200]})
            print(rows[-1], flush=True)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "device_parity.json", {"device": label, "torch": torch.__version__, "rows": rows})
    lines = [
        f"Device: {label} vs CPU, torch {torch.__version__}, {len(items)} queries, TF32 off.",
        "",
        "| model | max rel. diff CPU vs GPU | same top-1 window | alone vs padded (max window diff) |",
        "|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | error: {row['error'][:80]} | | |")
        else:
            lines.append(
                f"| {row['model']} | {row['max_rel_diff_cpu_vs_device']:.1e} | {row['same_top1']:.3f} | "
                f"{row['alone_vs_padded']:.1e} |"
            )
    text = "\n".join(lines) + "\n"
    (out / "device_parity.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
