"""Shared test helpers (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def make_item(
    length: int,
    n_words: int,
    seed: int,
    video_dim: int = 12,
    start: int = 1,
    end: int | None = None,
    unk_first: bool = False,
) -> dict:
    """One dataset item with random features and words, ready for `collate`."""
    g = torch.Generator().manual_seed(seed)
    end = length - 2 if end is None else end
    video = torch.randn(length, video_dim, generator=g).numpy()
    if unk_first:  # a query whose first word is unknown (id 1)
        words = [1] + torch.randint(2, 20, (n_words - 1,), generator=g).tolist()
    else:
        words = torch.randint(1, 20, (n_words,), generator=g).tolist()
    chars = [torch.randint(1, 15, (int(k),), generator=g).tolist() for k in torch.randint(1, 9, (n_words,))]
    return {
        "index": seed,
        "video": video,
        "words": words,
        "chars": chars,
        "start_index": start,
        "end_index": end,
        "start_frac": start / length,
        "end_frac": (end + 1) / length,
        "duration": float(length),
    }


def train_tiny_student(
    data_yaml, out, epochs: int = 1, fold: tuple[int, int] | None = None, options: dict | None = None
):
    """A tiny student (d=32, 4 heads, plus `options`) trained on `data_yaml` for `epochs` epochs into
    `out`, on one thread (without the train videos of `fold` (i, k) when given)."""
    from emtm.config import TrainConfig
    from emtm.engine.train import train

    torch.set_num_threads(1)
    optim = {"epochs": epochs, "batch_size": 16, "lr": 2e-3} if epochs else {"epochs": 0}
    cfg = TrainConfig(
        data=str(data_yaml),
        model_options={"d": 32, "n_heads": 4, **(options or {})},
        optim=optim,
        run={"progress": False, "device": "cpu"},
        fold=fold,
    )
    train(cfg, out)
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write `records` as JSON lines to `path`; returns `path`."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
