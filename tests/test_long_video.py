"""Long videos: sliding windows with merged proposals beyond max_video_len (Grounder, emtm predict)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from emtm import Grounder, Moment
from emtm.cli import main
from emtm.data.dataset import encode_query
from emtm.engine.export import write_random_model
from emtm.engine.inference import (
    PreparedVideo,
    WindowedVideo,
    ground_queries,
    merge_windows,
    prepare_windows,
    window_plan,
)
from emtm.engine.metrics import temporal_iou
from emtm.errors import EmtmError
from emtm.models.student import SpanModel

WORDS = ["a", "person", "opens", "the", "door", "sits", "down", "on", "chair"]
DIM, MAX_LEN = 16, 32  # write_random_model's video_dim and max_video_len


class EdgeStub(SpanModel):
    """A hand-set span model: the query's first word picks a feature channel c; the start logit is
    SCALE x the rise of channel c into a clip, the end logit SCALE x its fall after a clip (edges are
    replicated at the window's ends, so a window that cuts a moment sees only one of its boundaries).
    On a video that is 0 except for a run of 1s in channel c, it finds exactly that run."""

    SCALE = 20.0

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.register_buffer("anchor", torch.zeros(1))

    def encode_video(self, video: Tensor, video_mask: Tensor) -> Tensor:
        return video.float() * video_mask.unsqueeze(-1)

    def ground_encoded(self, video_enc, video_mask, words, chars, query_mask) -> dict[str, Tensor]:
        channel = words[:, 0] % video_enc.shape[-1]
        video_enc = video_enc.expand(len(words), -1, -1)
        signal = video_enc.gather(2, channel.view(-1, 1, 1).expand(-1, video_enc.shape[1], 1))[..., 0]
        before = torch.cat([signal[:, :1], signal[:, :-1]], dim=1)
        after = torch.cat([signal[:, 1:], signal[:, -1:]], dim=1)
        return {"start_logits": self.SCALE * (signal - before), "end_logits": self.SCALE * (signal - after)}

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        video = self.encode_video(batch["video"], batch["video_mask"])
        return self.ground_encoded(
            video, batch["video_mask"], batch["words"], batch["chars"], batch["query_mask"]
        )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_model(tmp_path_factory.mktemp("long") / "model", words=WORDS)


def with_clip_seconds(grounder: Grounder, seconds: float | None) -> Grounder:
    config = {**grounder.config, "features": {**grounder.config["features"], "clip_seconds": seconds}}
    return Grounder(grounder.run, config)


@pytest.fixture(scope="module")
def stub(model_dir: Path) -> Grounder:
    """The random model's vocabulary and spec with EdgeStub as the model; 1 s per clip."""
    g = Grounder.load(model_dir, device="cpu")
    return with_clip_seconds(Grounder(dataclasses.replace(g.run, model=EdgeStub()), g.config), 1.0)


def channel(g: Grounder, query: str) -> int:
    words, _ = encode_query(query, g.run.vocab, g.run.spec.max_query_len, g.run.spec.max_word_chars)
    return words[0] % DIM


def long_video(g: Grounder, moments: dict[str, tuple[int, int]], n_clips: int = 640) -> np.ndarray:
    """n_clips zero clips with, per query, a run of 1s in its channel over clips [first, stop)."""
    feats = np.zeros((n_clips, DIM), dtype=np.float32)
    for query, (first, stop) in moments.items():
        feats[first:stop, channel(g, query)] = 1.0
    return feats


# ------------------------------------------------------------------------------------- (a) short videos
@pytest.mark.parametrize("n_clips", [7, MAX_LEN])
def test_short_video_gives_exactly_the_old_result(model_dir: Path, n_clips: int) -> None:
    g = with_clip_seconds(Grounder.load(model_dir, device="cpu"), 1.0)
    feats = np.random.default_rng(n_clips).normal(size=(n_clips, DIM)).astype(np.float32)
    queries = ["a person opens the door", "sits down on a chair"]
    old = ground_queries(g.run, feats, 12.5, queries, top_k=3)  # the pre-window code path
    for mode in ("auto", "window", "resample"):
        video = g.encode_video(feats, 12.5, long_video=mode)
        assert video.windows == () and isinstance(video.prepared, PreparedVideo)
        assert video.ground_many(queries, top_k=3) == [[*dict.fromkeys(m)] for m in old]
        assert g.ground(feats, queries[0], 12.5, long_video=mode) == old[0][0]


def test_auto_without_a_clip_length_keeps_mean_pooling(model_dir: Path) -> None:
    g = Grounder.load(model_dir, device="cpu")
    assert g.clip_seconds is None
    feats = np.random.default_rng(1).normal(size=(100, DIM)).astype(np.float32)
    assert g.encode_video(feats, 100.0).windows == ()
    assert g.ground(feats, "the door", 100.0, top_k=2) == g.ground(
        feats, "the door", 100.0, top_k=2, long_video="resample"
    )
    assert len(g.encode_video(feats, 100.0, long_video="window").windows) == 6  # 0,16,..,64 + aligned end


# ------------------------------------------------------------------------- (b) a moment far beyond window 1
def test_late_moment_is_found_with_windows_and_lost_with_resampling(stub: Grounder) -> None:
    truth = {"a person opens the door": (600, 603), "sits down on a chair": (130, 134)}
    assert channel(stub, "a person opens the door") != channel(stub, "sits down on a chair")
    feats = long_video(stub, truth)  # 640 clips of 1 s: 20 x max_video_len
    windowed = stub.encode_video(feats)  # auto: the model records 1 s per clip
    assert len(windowed.windows) == 39 and windowed.duration == 640.0
    resampled = stub.encode_video(feats, long_video="resample")
    for query, (first, stop) in truth.items():
        best = windowed.ground(query)
        assert (best.start, best.end) == (float(first), float(stop))
        assert best.score > 0.99
        pooled = resampled.ground(query)  # one bin = 20 clips: the 3-4 s moment is smeared over 20 s
        assert temporal_iou(np.array([pooled.start, pooled.end]), np.array([first, stop])) < 0.25
    # several videos and queries batched across windows give the same answers
    many = stub.ground_many({"v": feats}, [("v", q) for q in truth], top_k=2)
    assert [m[0] for m in many] == [windowed.ground(q) for q in truth]


def test_windows_are_encoded_in_batches_like_alone(model_dir: Path) -> None:
    g = Grounder.load(model_dir, device="cpu")  # the real (random-weight) student
    feats = np.random.default_rng(2).normal(size=(90, DIM)).astype(np.float32)
    video = prepare_windows(g.run, feats, 45.0, window=24, stride=10)
    assert video.spans == ((0, 24), (10, 34), (20, 44), (30, 54), (40, 64), (50, 74), (60, 84), (66, 90))
    for (first, stop), part in zip(video.spans, video.windows):
        alone = g.encode_video(feats[first:stop], part.duration, long_video="resample").prepared
        assert part.duration == pytest.approx((stop - first) * 0.5)
        torch.testing.assert_close(part.encoded, alone.encoded, atol=1e-5, rtol=1e-5)
    moments = g.ground(feats, "the door", 45.0, top_k=5, long_video="window", window=24, stride=10)
    assert 1 <= len(moments) <= 5 and all(0.0 <= m.start < m.end <= 45.0 for m in moments)


# ------------------------------------------------------------------------- (c) coverage, merging, clipping
def test_windows_cover_every_clip() -> None:
    for n, window, stride in itertools.product(
        [1, 5, 31, 32, 33, 64, 100, 641], [1, 4, 17, 32], [1, 3, 8, 17]
    ):
        if stride > window:
            continue
        spans = window_plan(n, MAX_LEN, window, stride)
        covered = np.zeros(n, dtype=int)
        for first, stop in spans:
            covered[first:stop] += 1
        assert covered.min() >= 1, (n, window, stride)
        assert {stop - first for first, stop in spans} == {min(window, n)}
        assert spans[0][0] == 0 and spans[-1][1] == n
        starts = [first for first, _ in spans]
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))
    assert window_plan(100, MAX_LEN) == tuple((s, s + 32) for s in (0, 16, 32, 48, 64)) + ((68, 100),)


def test_overlapping_windows_are_merged_without_duplicates(stub: Grounder) -> None:
    query = "a person opens the door"
    feats = long_video(stub, {query: (40, 44)}, n_clips=200)  # clips 40-43 lie in windows at 16 and 32
    video = stub.encode_video(feats)
    assert sum(first <= 40 and stop >= 44 for first, stop in video.windows) == 2
    moments = video.ground(query, top_k=5)
    assert (moments[0].start, moments[0].end) == (40.0, 44.0)
    assert len(moments) == len({(m.start, m.end) for m in moments})
    windows = np.array([[m.start, m.end] for m in moments])
    ious = temporal_iou(windows[:, None, :], windows[None, :, :])
    assert (ious[~np.eye(len(moments), dtype=bool)] <= stub.run.cfg.eval.nms_iou).all()
    assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)


def test_merged_moments_are_clipped_to_the_video() -> None:
    part = PreparedVideo(np.zeros((4, 2), np.float32), 4.0, None)
    video = WindowedVideo((part, part), ((0, 4), (2, 6)), duration=6.0, n_clips=6, stride=2)
    found = [[Moment(-0.5, 1.0, 0.2)], [Moment(3.0, 4.5, 0.9), Moment(2.9, 4.5, 0.8)]]
    merged = merge_windows(video, found, top_k=3, nms_iou=0.5)
    # window 2 starts at 2 s: [5.0, 6.5] -> [5.0, 6.0]; [4.9, 6.5] overlaps it -> dropped by NMS
    assert merged == [Moment(5.0, 6.0, 0.9), Moment(0.0, 1.0, 0.2), Moment(5.0, 6.0, 0.9)]


# ------------------------------------------------------------------------------------- (d) bad settings
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window must be a whole number of clips >= 1, got 0"),
        ({"window": 2.5}, "window must be a whole number"),
        ({"window": True}, "window must be a whole number"),
        ({"window": 33}, "max_video_len = 32"),
        ({"stride": 0}, "stride must be a whole number"),
        ({"window": 8, "stride": 9}, "stride (9 clips) is larger than the window (8 clips)"),
        ({"long_video": "slide"}, "long_video must be one of auto, window, resample, got 'slide'"),
        ({"long_video": "resample", "window": 8}, 'leave them out with long_video="resample"'),
    ],
)
def test_bad_window_settings_are_clear_errors(stub: Grounder, kwargs: dict, message: str) -> None:
    feats = np.zeros((10, DIM), dtype=np.float32)  # refused even for a short video
    with pytest.raises(EmtmError) as err:
        stub.ground(feats, "the door", **kwargs)
    assert message in str(err.value)


def test_cli_predict_long_video(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "long.npy"
    np.save(path, np.random.default_rng(3).normal(size=(100, DIM)).astype(np.float32))
    args = ["predict", "--model", str(model_dir), "--features", str(path), "--query", "the door"]
    assert main([*args, "--duration", "50", "--long-video", "window", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "long.npy: 100 clips, grounded in 6 sliding windows of 32 clips (stride 16)" in out
    assert "rank" in out
    assert main([*args, "--duration", "50"]) == 0  # no clip length recorded: mean-pooled as before
    assert "sliding windows" not in capsys.readouterr().out
    assert main([*args, "--duration", "50", "--window", "40"]) == 2
    assert "max_video_len = 32" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--data", "d.yaml", "--stride", "4"]) == 2
    assert "not --data" in capsys.readouterr().err
