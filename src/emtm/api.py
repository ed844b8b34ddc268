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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emtm.engine.checkpoint import LoadedRun
from emtm.engine.inference import (
    Moment,
    PreparedVideo,
    ground_pairs,
    ground_prepared,
    model_device,
    prepare_video,
)
from emtm.errors import EmtmError

__all__ = ["EncodedVideo", "Grounder", "Moment"]


def pick_device(device: str | torch.device | None) -> torch.device:
    """None or "auto": CUDA when available, else CPU; otherwise the device asked for."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EmtmError("device cuda was asked for but no CUDA GPU is visible; use device='cpu' or None")
    return device


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
    says which); videos longer than `max_video_len` clips are mean-pooled to it. Durations are in
    seconds; when one is not given, it is T x the clip length recorded with the model, if any.
    """

    def __init__(self, run: LoadedRun, config: dict[str, Any]):
        self.run = run
        self.config = config

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> Grounder:
        """Load a run directory (`emtm train` or `emtm distill --out`; a distilled run gives its
        student) or an exported model folder (`emtm export --out`). `device`: None for CUDA when
        available, else CPU; or "cpu", "cuda", "cuda:1", a torch.device.
        """
        from emtm.engine.export import describe, load_model

        run = load_model(path, pick_device(device))
        return cls(run, describe(run))

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

    def encode_video(self, features: np.ndarray, duration: float | None = None) -> EncodedVideo:
        """Encode a video once (the student's video branch), to ground any number of sentences in it."""
        duration = self._duration(features, duration)
        return EncodedVideo(self, prepare_video(self.run, features, duration))

    def ground(
        self, features: np.ndarray, query: str, duration: float | None = None, top_k: int = 1
    ) -> Moment | list[Moment]:
        """The best moment of `query` in the video; with `top_k > 1`, up to top_k distinct moments
        after temporal NMS, best first."""
        return self.encode_video(features, duration).ground(query, top_k)

    def ground_many(
        self,
        videos: Mapping[str, np.ndarray],
        queries: Sequence[tuple[str, str]],
        durations: Mapping[str, float] | None = None,
        top_k: int = 1,
        batch_size: int = 64,
    ) -> list[Moment] | list[list[Moment]]:
        """Ground many (video_id, sentence) pairs: each video is encoded once, the pairs are batched.

        `videos` maps a video id to its (T, D) features, `durations` a video id to its length in
        seconds (needed unless the model records its clip length). Returns one result per pair, in
        order: a Moment, or with `top_k > 1` a list of them.
        """
        prepared: dict[str, PreparedVideo] = {}
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
                    prepared[video_id] = self.encode_video(videos[video_id], duration).prepared
                except EmtmError as err:
                    raise EmtmError(f"video {video_id!r}: {err}") from None
            pairs.append((prepared[video_id], query))
        found = ground_pairs(self.run, pairs, top_k, batch_size)
        return [moments[0] if top_k == 1 else distinct(moments) for moments in found]

    def __repr__(self) -> str:
        arch = self.config["architecture"]
        params = f"{arch['n_trainable']:,} parameters"
        return f"Grounder({arch['name']}, {params}, D={self.feature_dim}, {self.device})"


@dataclass(frozen=True)
class EncodedVideo:
    """A video encoded once by a Grounder; `ground` sentences in it without encoding it again."""

    grounder: Grounder
    prepared: PreparedVideo

    @property
    def duration(self) -> float:
        return self.prepared.duration

    def ground(self, query: str, top_k: int = 1) -> Moment | list[Moment]:
        """The best moment (top_k=1) or up to top_k distinct moments after temporal NMS, best first."""
        return self.ground_many([query], top_k)[0]

    def ground_many(
        self, queries: Sequence[str], top_k: int = 1, batch_size: int = 64
    ) -> list[Moment] | list[list[Moment]]:
        """One result per sentence, in order (batched)."""
        if isinstance(queries, str):
            raise EmtmError("queries must be a list of sentences, not one string; use ground() for one")
        found = ground_prepared(self.grounder.run, self.prepared, list(queries), top_k, batch_size)
        return [moments[0] if top_k == 1 else distinct(moments) for moments in found]
