"""The Python API: load a trained model once, ground sentences in videos' clip features.

>>> import tempfile
>>> import numpy as np
>>> from emtm import Grounder
>>> from emtm.engine.export import write_random_model
>>> path = write_random_model(tempfile.mkdtemp(), words=["a", "person", "opens", "the", "door"])
>>> g = Grounder.load(path, device="cpu")      # a run directory or an exported model folder
>>> features = np.random.default_rng(0).normal(size=(40, g.feature_dim)).astype(np.float32)
>>> best = g.ground(features, "a person opens the door", duration=31.2)
>>> 0.0 <= best.start < best.end <= 31.2 and 0.0 < best.score <= 1.0
True
>>> top = g.ground(features, "a person opens the door", duration=31.2, top_k=3)
>>> top[0] == best and len(top) <= 3
True
>>> video = g.encode_video(features, duration=31.2)   # encode once, ground many sentences
>>> video.ground("a person opens the door") == best
True
>>> g.ground_many({"v1": features}, [("v1", "a person opens the door")], {"v1": 31.2}) == [best]
True

(The model above has random weights; `Grounder.load("runs/student")` loads a trained one.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emtm.device import resolve_device
from emtm.engine import speed
from emtm.engine.checkpoint import LoadedRun
from emtm.engine.inference import (
    Moment,
    PreparedVideo,
    WindowedVideo,
    ground_videos,
    model_device,
    prepare_long_video,
)
from emtm.errors import EmtmError

__all__ = ["EncodedVideo", "Grounder", "Moment"]


def distinct(moments: list[Moment]) -> list[Moment]:
    """Drop repeated windows (decoding pads with the best one when fewer survive NMS), keep the order."""
    seen: set[tuple[float, float]] = set()
    out = []
    for moment in moments:
        if (moment.start, moment.end) not in seen:
            seen.add((moment.start, moment.end))
            out.append(moment)
    return out


class Grounder:
    """A loaded grounding model: `ground` sentences in one video, `ground_many` across videos.

    Features are a video's (T, D) clip features of the kind the model was trained on (`config`
    says which). Durations are in seconds; when one is not given, it is T x the clip length recorded
    with the model, if any. Videos longer than `max_video_len` clips are, with `long_video="auto"`
    (the default), grounded in sliding windows of `window` clips every `stride` clips when the model
    records its clip length, else mean-pooled to max_video_len clips as in training; "window" and
    "resample" force one or the other (docs/API.md, "Long videos").
    """

    def __init__(self, run: LoadedRun, config: dict[str, Any], precision: str = "fp32", cast: bool = False):
        self.run = run
        self.config = config
        speed.check_precision(precision, model_device(run))
        self.precision, self.cast = precision, cast

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        compile: str | None = None,
        cast: bool = False,
    ) -> Grounder:
        """Load a run directory (`emtm train` or `emtm distill --out`; a distilled run gives its
        student) or an exported model folder (`emtm export --out`). `device`: None for CUDA when
        available, else CPU; or "cpu", "cuda", "cuda:1", a torch.device.

        The fast path (docs/BENCHMARKS.md, section GPU): `precision="fp16"` autocasts on CUDA (on an
        H200 it kept 99.6% of a trained student's top-1 spans; "bf16" about 97%); `cast=True` converts
        the weights (and each video's features) to that precision once instead of autocasting every
        call, faster again (the fastest GPU path measured: fp16 + cast + compile); `compile` is a
        torch.compile mode ("default", "reduce-overhead", "max-autotune", ...): each new input shape
        compiles on its first call, so it pays in a long-running process.
        """
        from emtm.engine.export import describe
        from emtm.engine.model_dir import load_model

        run = load_model(path, resolve_device(device))
        speed.prepare_inference(run.model, precision, model_device(run), cast, compile)
        return cls(run, describe(run), precision, cast)

    def autocast(self) -> AbstractContextManager:
        """The context every model call of this Grounder runs in (autocast for fp16/bf16, none when
        the weights were cast)."""
        return speed.autocast("fp32" if self.cast else self.precision, self.device)

    @property
    def device(self) -> torch.device:
        return model_device(self.run)

    @property
    def feature_dim(self) -> int:
        """D of the (T, D) features the model expects."""
        return self.run.spec.video_dim

    @property
    def max_video_len(self) -> int:
        return self.run.spec.max_video_len

    @property
    def clip_seconds(self) -> float | None:
        """Seconds of video per feature row, when the model's training data recorded it."""
        return self.config["features"].get("clip_seconds")

    def _duration(self, features: np.ndarray, duration: float | None) -> float:
        if duration is not None:
            return duration
        if self.clip_seconds is None:
            raise EmtmError(
                "pass duration= (seconds): this model does not record how long a clip is, so the length "
                "of the video cannot be derived from its features"
            )
        return float(np.shape(features)[0]) * self.clip_seconds

    def encode_video(
        self,
        features: np.ndarray,
        duration: float | None = None,
        long_video: str = "auto",
        window: int | None = None,
        stride: int | None = None,
    ) -> EncodedVideo:
        """Encode a video once (the student's video branch; each sliding window once for a long
        video), to ground any number of sentences in it."""
        duration = self._duration(features, duration)
        known = self.clip_seconds is not None
        with self.autocast():
            prepared = prepare_long_video(self.run, features, duration, long_video, window, stride, known)
        return EncodedVideo(self, prepared)

    def ground(
        self,
        features: np.ndarray,
        query: str,
        duration: float | None = None,
        top_k: int = 1,
        long_video: str = "auto",
        window: int | None = None,
        stride: int | None = None,
    ) -> Moment | list[Moment]:
        """The best moment of `query` in the video; with `top_k > 1`, up to top_k distinct moments
        after temporal NMS, best first. `long_video`, `window`, `stride`: see the class docstring."""
        return self.encode_video(features, duration, long_video, window, stride).ground(query, top_k)

    def ground_many(
        self,
        videos: Mapping[str, np.ndarray],
        queries: Sequence[tuple[str, str]],
        durations: Mapping[str, float] | None = None,
        top_k: int = 1,
        batch_size: int = 64,
        long_video: str = "auto",
        window: int | None = None,
        stride: int | None = None,
    ) -> list[Moment] | list[list[Moment]]:
        """Ground many (video_id, sentence) pairs: each video is encoded once, the pairs are batched.

        `videos` maps a video id to its (T, D) features, `durations` a video id to its length in
        seconds (needed unless the model records its clip length). Returns one result per pair, in
        order: a Moment, or with `top_k > 1` a list of them. `long_video`, `window`, `stride` apply
        to every video (see the class docstring).
        """
        prepared: dict[str, PreparedVideo | WindowedVideo] = {}
        pairs = []
        for i, pair in enumerate(queries):
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise EmtmError(f"queries[{i}] must be a (video_id, sentence) pair, got {pair!r}")
            video_id, query = pair
            if video_id not in videos:
                raise EmtmError(f"queries[{i}]: video {video_id!r} is not in the videos given")
            if video_id not in prepared:
                duration = None if durations is None else durations.get(video_id)
                try:
                    encoded = self.encode_video(videos[video_id], duration, long_video, window, stride)
                    prepared[video_id] = encoded.prepared
                except EmtmError as err:
                    raise EmtmError(f"video {video_id!r}: {err}") from None
            pairs.append((prepared[video_id], query))
        with self.autocast():
            found = ground_videos(self.run, pairs, top_k, batch_size)
        return [moments[0] if top_k == 1 else distinct(moments) for moments in found]

    def __repr__(self) -> str:
        arch = self.config["architecture"]
        params = f"{arch['n_trainable']:,} parameters"
        precision = "" if self.precision == "fp32" else f", {self.precision}{' cast' if self.cast else ''}"
        return f"Grounder({arch['name']}, {params}, D={self.feature_dim}, {self.device}{precision})"


@dataclass(frozen=True)
class EncodedVideo:
    """A video encoded once by a Grounder; `ground` sentences in it without encoding it again.

    `prepared` is a PreparedVideo (the whole video, mean-pooled beyond max_video_len) or, for a long
    video in sliding windows, a WindowedVideo.
    """

    grounder: Grounder
    prepared: PreparedVideo | WindowedVideo

    @property
    def duration(self) -> float:
        return self.prepared.duration

    @property
    def windows(self) -> tuple[tuple[int, int], ...]:
        """The sliding windows' clip ranges [first, stop); empty when the video is grounded whole."""
        return self.prepared.spans if isinstance(self.prepared, WindowedVideo) else ()

    def ground(self, query: str, top_k: int = 1) -> Moment | list[Moment]:
        """The best moment (top_k=1) or up to top_k distinct moments after temporal NMS, best first."""
        return self.ground_many([query], top_k)[0]

    def ground_many(
        self, queries: Sequence[str], top_k: int = 1, batch_size: int = 64
    ) -> list[Moment] | list[list[Moment]]:
        """One result per sentence, in order (batched)."""
        if isinstance(queries, str):
            raise EmtmError("queries must be a list of sentences, not one string; use ground() for one")
        pairs = [(self.prepared, query) for query in queries]
        with self.grounder.autocast():
            found = ground_videos(self.grounder.run, pairs, top_k, batch_size)
        return [moments[0] if top_k == 1 else distinct(moments) for moments in found]
