"""FLOPs per query with torch.utils.flop_counter (FLOPs = 2 x multiply-accumulates), at inference."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from emtm.data.dataset import collate
from emtm.models.base import DataSpec, GroundingModel


def dummy_batch(
    spec: DataSpec, n_clips: int, n_words: int = 8, batch_size: int = 1
) -> dict[str, torch.Tensor]:
    """A batch of `batch_size` identical queries with `n_clips` clips and `n_words` words."""
    g = torch.Generator().manual_seed(0)
    vocab = spec.word_vectors.shape[0]
    item = {
        "index": 0,
        "video": torch.randn(n_clips, spec.video_dim, generator=g).numpy(),
        "words": torch.randint(2, max(vocab, 3), (n_words,), generator=g).clamp_max(vocab - 1).tolist(),
        "chars": [[2, 3, 4, 5]] * n_words,
        "start_index": 0,
        "end_index": n_clips - 1,
        "start_frac": 0.0,
        "end_frac": 1.0,
        "duration": float(n_clips),
    }
    return collate([item] * batch_size)


def flops_per_query(model: GroundingModel, spec: DataSpec, n_clips: int, n_words: int = 8) -> int:
    """Forward FLOPs of one query in eval mode (autograd on, so attention's fused fast path is counted)."""
    model = model.eval()
    batch = {k: v.to(next(model.parameters()).device) for k, v in dummy_batch(spec, n_clips, n_words).items()}
    with FlopCounterMode(display=False) as counter:
        model(batch)
    return int(counter.get_total_flops())


def count_parameters(model: GroundingModel) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return {"trainable": model.n_trainable, "total": total}
