"""Ground queries in one video with a trained run: the core the CLI (and later the Grounder API) use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from emtm.data.dataset import collate, encode_query
from emtm.data.features import resample_features
from emtm.engine.checkpoint import LoadedRun
from emtm.errors import EmtmError


@dataclass(frozen=True)
class Moment:
    start: float
    end: float
    score: float


@torch.no_grad()
def ground_queries(
    run: LoadedRun, features: np.ndarray, duration: float, queries: list[str], top_k: int = 5
) -> list[list[Moment]]:
    """Top-k moments (seconds) for each query in one video given its (T, D) features."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != run.spec.video_dim:
        raise EmtmError(
            f"features have shape {features.shape}; this model expects (T, {run.spec.video_dim}) "
            "clip features of the same kind it was trained on"
        )
    if not duration > 0:
        raise EmtmError(f"duration must be positive seconds, got {duration}")
    spec = run.spec
    video = resample_features(features, run.spec.max_video_len)
    items = []
    for query in queries:
        words, chars = encode_query(query, run.vocab, spec.max_query_len, spec.max_word_chars)
        items.append(
            {
                "index": 0,
                "video": video,
                "words": words,
                "chars": chars,
                "start_index": 0,
                "end_index": 0,
                "start_frac": 0.0,
                "end_frac": 0.0,
                "duration": duration,
            }
        )
    device = next(iter(run.model.buffers()), torch.zeros(0)).device
    batch = {k: v.to(device) for k, v in collate(items, spec.max_word_chars).items()}
    model = run.model.eval()
    eval_cfg = run.cfg.eval
    pred = model.predict(
        model(batch), batch, top_k=top_k, max_len=eval_cfg.max_moment_len, nms_iou=eval_cfg.nms_iou
    )
    windows = (pred.windows.float() * duration).cpu().numpy()
    scores = pred.scores.float().cpu().numpy()
    return [
        [Moment(float(s), float(e), float(p)) for (s, e), p in zip(w, sc)] for w, sc in zip(windows, scores)
    ]
