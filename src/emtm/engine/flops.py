"""FLOPs per query with torch.utils.flop_counter (FLOPs = 2 x multiply-accumulates), at inference,
and the synthetic inputs every benchmark uses."""

from __future__ import annotations

import itertools

import torch
from torch.utils.flop_counter import FlopCounterMode

from emtm.data.dataset import collate
from emtm.models.base import DataSpec, GroundingModel


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model with neither)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


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


def random_batch(
    spec: DataSpec,
    n_clips: int,
    batch_size: int,
    n_words: int = 8,
    seed: int = 0,
    one_video: bool = False,
    max_chars: int = 16,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """`batch_size` distinct random queries of `n_words` words over full-length videos of `n_clips` clips.

    Laid out as `collate` lays out a batch, made directly as tensors (a large GPU batch holds GBs of
    video features), drawn on `device` from a generator seeded with `seed`.
    one_video: every query is about the same video (the "one video, many queries" case).
    """
    g = torch.Generator(device=device).manual_seed(seed)
    vocab, n_chars = spec.word_vectors.shape[0], max(spec.n_chars, 3)
    shape = (1 if one_video else batch_size, n_clips, spec.video_dim)
    video = torch.randn(shape, generator=g, device=device).expand(batch_size, -1, -1).contiguous()
    words = torch.randint(2, max(vocab, 3), (batch_size, n_words), generator=g, device=device)
    chars = torch.randint(2, n_chars, (batch_size, n_words, max_chars), generator=g, device=device)
    word_lengths = torch.randint(2, 9, (batch_size, n_words, 1), generator=g, device=device)
    positions = torch.arange(max_chars, device=device)
    chars = torch.where(positions < word_lengths, chars.clamp_max(spec.n_chars - 1), 0)
    return {
        "video": video,
        "video_mask": torch.ones(batch_size, n_clips, dtype=torch.bool, device=device),
        "words": words.clamp_max(vocab - 1),
        "chars": chars,
        "query_mask": torch.ones(batch_size, n_words, dtype=torch.bool, device=device),
        "index": torch.arange(batch_size, device=device),
        "start_index": torch.zeros(batch_size, dtype=torch.long, device=device),
        "end_index": torch.full((batch_size,), n_clips - 1, dtype=torch.long, device=device),
        "start_frac": torch.zeros(batch_size, device=device),
        "end_frac": torch.ones(batch_size, device=device),
        "duration": torch.full((batch_size,), float(n_clips), device=device),
    }


def flops_per_query(model: GroundingModel, spec: DataSpec, n_clips: int, n_words: int = 8) -> int:
    """Forward FLOPs of one query in eval mode (autograd on, so attention's fused fast path is counted)."""
    model = model.eval()
    device = model_device(model)
    batch = {k: v.to(device) for k, v in dummy_batch(spec, n_clips, n_words).items()}
    with FlopCounterMode(display=False) as counter:
        model(batch)
    return int(counter.get_total_flops())


def count_parameters(model: GroundingModel) -> dict[str, int]:
    """Trainable parameters, and the total of all parameters and buffers (frozen word vectors included)."""
    total = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return {"trainable": model.n_trainable, "total": total}
