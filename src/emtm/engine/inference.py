"""Ground queries in one video with a loaded model: the core of `emtm predict` and the Grounder API.

A video is prepared once (`prepare_video`: checked, resampled to the model's grid and, for models
that split their forward pass like the student, encoded); `ground_pairs` then grounds any number of
(video, query) pairs in batches, reusing each video's encoding. `ground_queries` does both for one video.

Long videos (more clips than the model's `max_video_len`) are either mean-pooled to it (the training
behaviour, `prepare_video`) or cut into overlapping sliding windows of at most `max_video_len` clips
(`prepare_windows`); `ground_videos` grounds pairs of either kind and merges a windowed video's
moments across its windows with temporal NMS.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from emtm.data.dataset import collate, encode_query
from emtm.data.features import FEATURE_LIMIT, resample_features
from emtm.engine.checkpoint import LoadedRun
from emtm.engine.evaluate import to_device
from emtm.engine.metrics import temporal_nms
from emtm.engine.speed import model_dtype
from emtm.errors import EmtmError

LONG_VIDEO_MODES = ("auto", "window", "resample")


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
        with np.errstate(over="ignore"):  # beyond float32 becomes Inf, refused below
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
    peak = float(np.abs(features).max())
    if peak > FEATURE_LIMIT:
        raise EmtmError(
            f"features reach {peak:.3g} in absolute value, beyond {FEATURE_LIMIT:g}: no CNN gives such "
            "values (real clip features are O(1) to O(100)), and the model's arithmetic would overflow; "
            "check how they were computed or scale them"
        )
    return features


def check_duration(duration: float) -> None:
    """A clear EmtmError unless `duration` is a finite, positive number (seconds)."""
    number = isinstance(duration, numbers.Real) and not isinstance(duration, bool)
    if not (number and np.isfinite(duration) and duration > 0):
        raise EmtmError(f"duration must be a positive number of seconds, got {duration!r}")


@torch.no_grad()
def prepare_video(run: LoadedRun, features: np.ndarray, duration: float) -> PreparedVideo:
    """Check and resample one video's (T, D) features; encode them once when the model allows it."""
    check_duration(duration)
    video = resample_features(check_features(run, features), run.spec.max_video_len)
    device = model_device(run)
    mask = torch.ones(1, len(video), dtype=torch.bool, device=device)
    encoded = None
    model = run.model.eval()
    if hasattr(model, "encode_video"):
        features = torch.tensor(video, device=device, dtype=model_dtype(model))
        encoded = model.encode_video(features.unsqueeze(0), mask)
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
    return to_device(collate(items, spec.max_word_chars), model_device(run), model_dtype(run.model))


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


# ------------------------------------------------------------------------------------------- long videos
@dataclass(frozen=True)
class WindowedVideo:
    """A long video cut into sliding windows of clips, each prepared (and encoded) on its own.

    `spans[i]` is window i's clip range [first, stop) in the original (T, D) features; every window
    has the same number of clips (the last one is aligned to the video's end).
    """

    windows: tuple[PreparedVideo, ...]
    spans: tuple[tuple[int, int], ...]
    duration: float  # seconds, of the whole video
    n_clips: int  # T of the whole video
    stride: int

    @property
    def window(self) -> int:
        """Clips per window."""
        return self.spans[0][1] - self.spans[0][0]

    @property
    def clip_seconds(self) -> float:
        return self.duration / self.n_clips


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise EmtmError(f"{name} must be a whole number of clips >= 1, got {value!r}")
    return int(value)


def window_size(max_video_len: int, window: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """The (window, stride) in clips, defaults filled in, or a clear EmtmError.

    `window` defaults to `max_video_len` and may not exceed it (a longer window would be mean-pooled);
    `stride` defaults to half the window (rounded down, at least 1) and may not exceed the window
    (clips between windows would be skipped).
    """
    window = max_video_len if window is None else _positive_int("window", window)
    if window > max_video_len:
        raise EmtmError(
            f"window is {window} clips, but this model takes at most max_video_len = {max_video_len} "
            f"clips at once; use a window of {max_video_len} clips or fewer"
        )
    stride = max(1, window // 2) if stride is None else _positive_int("stride", stride)
    if stride > window:
        raise EmtmError(
            f"stride ({stride} clips) is larger than the window ({window} clips), so clips between "
            "windows would never be seen; use a stride of at most the window"
        )
    return window, stride


def window_plan(
    n_clips: int, max_video_len: int, window: int | None = None, stride: int | None = None
) -> tuple[tuple[int, int], ...]:
    """Clip ranges [first, stop) of the sliding windows over `n_clips` clips (`window_size`).

    Windows start at 0, stride, 2 x stride, ...; when the last one does not reach the end, one more
    window ends exactly at the last clip. So every clip is in a window, every window has
    `min(window, n_clips)` clips, and a video of at most `window` clips is one window.
    """
    window, stride = window_size(max_video_len, window, stride)
    if n_clips <= window:
        return ((0, n_clips),)
    spans = [(first, first + window) for first in range(0, n_clips - window + 1, stride)]
    if spans[-1][1] < n_clips:
        spans.append((n_clips - window, n_clips))
    return tuple(spans)


def long_video_mode(mode: str, n_clips: int, max_video_len: int, clip_known: bool) -> str:
    """The mode a video is grounded in: "window" or "resample" (`mode` "auto" picks one).

    "auto" uses sliding windows when the video has more than `max_video_len` clips and the model's
    clip length is known (`clip_known`: the features are on the grid it was trained on), else the
    old mean-pooling, which changes nothing for a video of at most `max_video_len` clips.
    """
    if mode not in LONG_VIDEO_MODES:
        raise EmtmError(f"long_video must be one of {', '.join(LONG_VIDEO_MODES)}, got {mode!r}")
    if mode == "auto":
        return "window" if n_clips > max_video_len and clip_known else "resample"
    return mode


@torch.no_grad()
def prepare_windows(
    run: LoadedRun,
    features: np.ndarray,
    duration: float,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 64,
) -> WindowedVideo:
    """Check one video's (T, D) features and cut them into sliding windows (`window_plan`); when the
    model can encode a video on its own, encode the windows in batches of `batch_size`, once each."""
    check_duration(duration)
    features = check_features(run, features)
    spans = window_plan(len(features), run.spec.max_video_len, window, stride)
    stride = window_size(run.spec.max_video_len, window, stride)[1]
    clips = [features[first:stop] for first, stop in spans]
    seconds = float(duration) / len(features)
    encoded: list[Tensor | None] = [None] * len(clips)
    model = run.model.eval()
    if hasattr(model, "encode_video"):
        device = model_device(run)
        for first in range(0, len(clips), batch_size):
            video = torch.tensor(
                np.stack(clips[first : first + batch_size]), device=device, dtype=model_dtype(model)
            )
            mask = torch.ones(video.shape[:2], dtype=torch.bool, device=device)
            states = model.encode_video(video, mask)
            encoded[first : first + len(video)] = list(states.split(1))
    windows = tuple(
        PreparedVideo(clip, len(clip) * seconds, enc) for clip, enc in zip(clips, encoded, strict=True)
    )
    return WindowedVideo(windows, spans, float(duration), len(features), stride)


def prepare_long_video(
    run: LoadedRun,
    features: np.ndarray,
    duration: float,
    long_video: str = "auto",
    window: int | None = None,
    stride: int | None = None,
    clip_known: bool = False,
) -> PreparedVideo | WindowedVideo:
    """One video, prepared whole (`prepare_video`) or in sliding windows (`prepare_windows`).

    `long_video`: "resample" always prepares it whole (mean-pooled beyond max_video_len); "window"
    uses windows whenever the video has more clips than the window (default max_video_len); "auto"
    uses windows when it has more than max_video_len clips and `clip_known`. `window` and `stride`
    are checked whatever the video's length, and refused with "resample".
    """
    if long_video not in LONG_VIDEO_MODES:
        raise EmtmError(f"long_video must be one of {', '.join(LONG_VIDEO_MODES)}, got {long_video!r}")
    if long_video == "resample" and (window is not None or stride is not None):
        raise EmtmError(
            'window and stride set sliding windows; leave them out with long_video="resample", '
            'or use long_video="window"'
        )
    max_len = run.spec.max_video_len
    window_size(max_len, window, stride)  # refuse bad values even for a short video
    check_duration(duration)
    features = check_features(run, features)
    n_clips = len(features)
    mode = long_video_mode(long_video, n_clips, max_len, clip_known)
    if mode == "window" and n_clips > (max_len if window is None else window):
        return prepare_windows(run, features, duration, window, stride)
    return prepare_video(run, features, duration)


def merge_windows(
    video: WindowedVideo, found: Sequence[list[Moment]], top_k: int, nms_iou: float | None
) -> list[Moment]:
    """One query's moments from each window (window-relative seconds) -> top_k moments of the whole
    video, best first: shifted by the window's start, clipped to [0, duration], repeats dropped,
    then greedy temporal NMS at `nms_iou` across all windows (`emtm.engine.metrics.temporal_nms`);
    padded with the best moment when fewer survive, like `ground_pairs`.

    Scores are the model's own (for span models Ps(start) x Pe(end), softmaxes over one window's
    clips); all windows have the same number of clips, so the scores are on one scale.
    """
    best: dict[tuple[float, float], float] = {}
    for (first, _), moments in zip(video.spans, found, strict=True):
        offset = first * video.clip_seconds
        for m in moments:
            start = min(max(offset + m.start, 0.0), video.duration)
            end = min(max(offset + m.end, 0.0), video.duration)
            best[(start, end)] = max(best.get((start, end), -np.inf), m.score)
    windows = np.array(list(best), dtype=np.float64).reshape(-1, 2)
    scores = np.array(list(best.values()), dtype=np.float64)
    keep = temporal_nms(windows, scores, 1.0 if nms_iou is None else nms_iou, top_k)
    moments = [Moment(float(windows[i, 0]), float(windows[i, 1]), float(scores[i])) for i in keep]
    return moments + [moments[0]] * (top_k - len(moments))


def ground_videos(
    run: LoadedRun,
    pairs: Sequence[tuple[PreparedVideo | WindowedVideo, str]],
    top_k: int = 5,
    batch_size: int = 64,
) -> list[list[Moment]]:
    """`ground_pairs` for videos prepared either way: a windowed video's query is grounded in each
    window (all windows of all pairs batched together, top_k per window) and merged (`merge_windows`)."""
    flat: list[tuple[PreparedVideo, str]] = []
    for video, query in pairs:
        windows = video.windows if isinstance(video, WindowedVideo) else (video,)
        flat += [(w, query) for w in windows]
    found = ground_pairs(run, flat, top_k, batch_size)
    results: list[list[Moment]] = []
    first = 0
    for video, _ in pairs:
        if isinstance(video, WindowedVideo):
            stop = first + len(video.windows)
            results.append(merge_windows(video, found[first:stop], top_k, run.cfg.eval.nms_iou))
        else:
            stop = first + 1
            results.append(found[first])
        first = stop
    return results
