"""Ground queries in one video with a loaded model: the core of `emtm predict` and the Grounder API.

A video is prepared once (`prepare_video`: checked, resampled to the model's grid and, for models
that split their forward pass like the student, encoded); `ground_pairs` then grounds any number of
(video, query) pairs in batches, reusing each video's encoding. `ground_queries` does both for one video.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from emtm.data.dataset import collate, encode_query
from emtm.data.features import resample_features
from emtm.engine.checkpoint import LoadedRun
from emtm.errors import EmtmError


@dataclass(frozen=True)
class Moment:
    """A predicted moment: start and end in seconds, and the model's score for it."""

    start: float
    end: float
    score: float


@dataclass(frozen=True)
class PreparedVideo:
    """One video on the model's clip grid, ready for any number of queries."""

    features: np.ndarray  # (L, D) float32, resampled to at most max_video_len clips
    duration: float  # seconds
    encoded: Tensor | None  # (1, L, d) clip states when the model can encode a video on its own

    @property
    def n_clips(self) -> int:
        return int(self.features.shape[0])


def model_device(run: LoadedRun) -> torch.device:
    tensor = next(iter(run.model.parameters()), None)
    if tensor is None:
        tensor = next(iter(run.model.buffers()), torch.zeros(0))
    return tensor.device


def check_features(run: LoadedRun, features: np.ndarray) -> np.ndarray:
    """`features` as a (T, D) float32 array of the model's feature dimension, or a clear EmtmError."""
    try:
        features = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise EmtmError(f"features are not a numeric array ({err}); expected (T, D) clip features") from None
    dim = run.spec.video_dim
    if features.ndim != 2 or features.shape[1] != dim or features.shape[0] == 0:
        raise EmtmError(
            f"features have shape {features.shape}; this model expects (T, {dim}) clip features, T >= 1, "
            "of the same kind it was trained on"
        )
    if not np.isfinite(features).all():
        raise EmtmError("features contain NaN or Inf values")
    return features


@torch.no_grad()
def prepare_video(run: LoadedRun, features: np.ndarray, duration: float) -> PreparedVideo:
    """Check and resample one video's (T, D) features; encode them once when the model allows it."""
    number = isinstance(duration, numbers.Real) and not isinstance(duration, bool)
    if not (number and np.isfinite(duration) and duration > 0):
        raise EmtmError(f"duration must be a positive number of seconds, got {duration!r}")
    video = resample_features(check_features(run, features), run.spec.max_video_len)
    device = model_device(run)
    mask = torch.ones(1, len(video), dtype=torch.bool, device=device)
    encoded = None
    model = run.model.eval()
    if hasattr(model, "encode_video"):
        encoded = model.encode_video(torch.tensor(video, device=device).unsqueeze(0), mask)
    return PreparedVideo(video, float(duration), encoded)


def query_batch(run: LoadedRun, pairs: Sequence[tuple[PreparedVideo, str]]) -> dict[str, Tensor]:
    """The collated batch of (video, query) pairs (labels are dummies), on the model's device."""
    spec = run.spec
    items = []
    for video, query in pairs:
        if not isinstance(query, str) or not query.strip():
            raise EmtmError(f"a query must be a non-empty string, got {query!r}")
        words, chars = encode_query(query, run.vocab, spec.max_query_len, spec.max_word_chars)
        items.append(
            {
                "index": 0,
                "video": video.features,
                "words": words,
                "chars": chars,
                "start_index": 0,
                "end_index": 0,
                "start_frac": 0.0,
                "end_frac": 0.0,
                "duration": video.duration,
            }
        )
    device = model_device(run)
    return {k: v.to(device) for k, v in collate(items, spec.max_word_chars).items()}


def encoded_batch(videos: Sequence[PreparedVideo], length: int) -> Tensor | None:
    """The cached encodings of a batch's videos: (1, L, d) when they are all one video (broadcast),
    else (B, length, d) zero-padded; None when the model does not encode videos on their own."""
    if any(v.encoded is None for v in videos):
        return None
    if all(v is videos[0] for v in videos):
        return videos[0].encoded
    first = videos[0].encoded
    out = first.new_zeros(len(videos), length, first.shape[-1])
    for i, video in enumerate(videos):
        out[i, : video.n_clips] = video.encoded[0]
    return out


@torch.no_grad()
def ground_pairs(
    run: LoadedRun, pairs: Sequence[tuple[PreparedVideo, str]], top_k: int = 5, batch_size: int = 64
) -> list[list[Moment]]:
    """Top-k moments (seconds, best first, after temporal NMS) for each (prepared video, query) pair.

    Pairs are grounded in batches of `batch_size`, across videos; each video's cached encoding is
    reused, so no video is encoded here.
    """
    if top_k < 1:
        raise EmtmError(f"top_k must be >= 1, got {top_k}")
    model = run.model.eval()
    eval_cfg = run.cfg.eval
    results: list[list[Moment]] = []
    for first in range(0, len(pairs), batch_size):
        chunk = pairs[first : first + batch_size]
        batch = query_batch(run, chunk)
        video_mask = batch["video_mask"]
        encoded = encoded_batch([video for video, _ in chunk], video_mask.shape[1])
        if encoded is not None:
            outputs = model.ground_encoded(
                encoded, video_mask, batch["words"], batch["chars"], batch["query_mask"]
            )
        else:
            outputs = model(batch)
        pred = model.predict(
            outputs, batch, top_k=top_k, max_len=eval_cfg.max_moment_len, nms_iou=eval_cfg.nms_iou
        )
        windows = (pred.windows.float() * batch["duration"].view(-1, 1, 1)).cpu().numpy()
        scores = pred.scores.float().cpu().numpy()
        results += [
            [Moment(float(s), float(e), float(p)) for (s, e), p in zip(w, sc)]
            for w, sc in zip(windows, scores)
        ]
    return results


def ground_prepared(
    run: LoadedRun, video: PreparedVideo, queries: Sequence[str], top_k: int = 5, batch_size: int = 64
) -> list[list[Moment]]:
    """Top-k moments (seconds, best first, after temporal NMS) for each query in one prepared video."""
    return ground_pairs(run, [(video, query) for query in queries], top_k, batch_size)


def ground_queries(
    run: LoadedRun, features: np.ndarray, duration: float, queries: list[str], top_k: int = 5
) -> list[list[Moment]]:
    """Top-k moments (seconds) for each query in one video given its (T, D) features."""
    return ground_prepared(run, prepare_video(run, features, duration), queries, top_k)
