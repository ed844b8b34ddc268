"""The Grounder API and the student's split forward pass (encode a video once, ground many queries)."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
import torch

import emtm.api
from emtm import Grounder, Moment
from emtm.config import load_data_config
from emtm.data.dataset import GroundingDataset, collate, prepare
from emtm.device import resolve_device
from emtm.engine.checkpoint import export_student, load_run, save_weights, write_run_config
from emtm.engine.evaluate import predict_dataset
from emtm.engine.metrics import temporal_iou
from emtm.errors import EmtmError
from emtm.models.base import DataSpec
from emtm.models.registry import build_model, model_config
from helpers import make_item, train_tiny_student

SPEC = DataSpec(video_dim=12, max_video_len=32, word_vectors=torch.randn(20, 8), n_chars=15, max_query_len=10)


@pytest.fixture(scope="module")
def run_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch tiny student."""
    out = train_tiny_student(tiny_data, tmp_path_factory.mktemp("api") / "run", epochs=1)
    return out


def student(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("student", model_config("student", {"d": 32, "n_heads": 4}), SPEC).eval()


# ---------------------------------------------------------------------------------------------- split
def test_encode_video_then_ground_encoded_equals_forward() -> None:
    model = student()
    batch = collate([make_item(7, 3, seed=1), make_item(25, 9, seed=2), make_item(16, 5, seed=3)])
    with torch.no_grad():
        full = model(batch)
        video = model.encode_video(batch["video"], batch["video_mask"])
        split = model.ground_encoded(
            video, batch["video_mask"], batch["words"], batch["chars"], batch["query_mask"]
        )
    assert set(split) == set(full)
    for key in full:
        torch.testing.assert_close(split[key], full[key], rtol=0, atol=1e-6)


def test_one_encoded_video_broadcasts_over_queries_and_padding_does_not_matter() -> None:
    model = student(1)
    base = make_item(20, 4, seed=5)
    others = [make_item(20, n, seed=s) for n, s in ((2, 6), (9, 7))]
    items = [base] + [{**o, "video": base["video"]} for o in others]  # one video, three queries
    batch = collate(items)
    with torch.no_grad():
        full = model(batch)
        encoded = model.encode_video(batch["video"][:1], batch["video_mask"][:1])  # (1, L, d)
        shared = model.ground_encoded(
            encoded, batch["video_mask"][:1], batch["words"], batch["chars"], batch["query_mask"]
        )
        alone_batch = collate([items[1]])  # the 2-word query alone: no query padding
        alone = model.ground_encoded(
            encoded, alone_batch["video_mask"], alone_batch["words"], alone_batch["chars"],
            alone_batch["query_mask"],
        )  # fmt: skip
    for key in full:
        torch.testing.assert_close(shared[key], full[key], rtol=0, atol=1e-6)
        torch.testing.assert_close(alone[key][0], full[key][1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="2 encoded videos for 3 queries"):
        model.ground_encoded(
            encoded.expand(2, -1, -1), batch["video_mask"][:2], batch["words"], batch["chars"],
            batch["query_mask"],
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- doctest
def test_the_module_docstring_example_runs() -> None:
    result = doctest.testmod(emtm.api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


# ---------------------------------------------------------------------------------------------- Grounder
def test_ground_agrees_with_the_evaluator(run_dir: Path, tiny_data: Path) -> None:
    """The API's best moment is the one `emtm evaluate` scores, for real test queries."""
    g = Grounder.load(run_dir, device="cpu")
    assert g.device.type == "cpu" and g.feature_dim == 64 and g.clip_seconds == 1.0
    loaded = load_run(run_dir)
    prepared = prepare(load_data_config(tiny_data), 0, ("test",))
    samples = prepared.splits["test"].samples[:12]
    dataset = GroundingDataset(samples, prepared.store, loaded.vocab, prepared.cfg)
    preds = predict_dataset(loaded.model, dataset, loaded.cfg.eval, torch.device("cpu"))
    videos = {s.video_id: prepared.store.load(s.video_id) for s in samples}
    durations = {s.video_id: s.duration for s in samples}
    many = g.ground_many(videos, [(s.video_id, s.sentence) for s in samples], durations)
    top5 = g.ground_many(videos, [(s.video_id, s.sentence) for s in samples], durations, top_k=5)
    for i, sample in enumerate(samples):
        one = g.ground(videos[sample.video_id], sample.sentence, duration=sample.duration)
        assert isinstance(one, Moment)
        np.testing.assert_allclose([one.start, one.end], preds.windows[i][0], rtol=0, atol=1e-4)
        np.testing.assert_allclose(one.score, preds.scores[i][0], rtol=1e-4)
        np.testing.assert_allclose([many[i].start, many[i].end], [one.start, one.end], atol=1e-4)
        assert top5[i][0] == many[i] and 1 <= len(top5[i]) <= 5
        windows = np.array([[m.start, m.end] for m in top5[i]])
        ious = temporal_iou(windows[:, None], windows[None])
        assert (ious[np.triu_indices(len(windows), 1)] <= 0.5 + 1e-6).all(), "temporal NMS at 0.5"
        assert [m.score for m in top5[i]] == sorted((m.score for m in top5[i]), reverse=True)


def test_encode_video_once_for_many_queries(run_dir: Path, tiny_data: Path) -> None:
    g = Grounder.load(run_dir, device="cpu")
    store = prepare(load_data_config(tiny_data), 0, ("test",)).store
    features = store.load(store.video_ids()[0])
    video = g.encode_video(features)  # duration: T clips x 1 s (the synthetic benchmark's clip length)
    assert video.duration == len(features) * 1.0
    queries = ["a person opens the door", "someone holds a cup", "a man sits down on the bed"]
    batched = video.ground_many(queries, top_k=3)
    for query, moments in zip(queries, batched):
        alone = video.ground(query)  # the query alone; batched ones are padded to the longest
        np.testing.assert_allclose([moments[0].start, moments[0].end], [alone.start, alone.end], atol=1e-4)
        assert all(0.0 <= m.start < m.end <= video.duration + 1e-6 for m in moments)
    assert g.ground(features, queries[0], duration=video.duration) == video.ground(queries[0])


def test_ground_many_encodes_each_video_once(run_dir: Path, tiny_data: Path, monkeypatch) -> None:
    g = Grounder.load(run_dir, device="cpu")
    store = prepare(load_data_config(tiny_data), 0, ("test",)).store
    videos = {v: store.load(v) for v in store.video_ids()[:3]}
    ids = list(videos)
    pairs = [
        (ids[i % 3], q) for i, q in enumerate(["a man sits", "someone holds a cup", "a door", "he runs"] * 2)
    ]
    calls = []
    encode = g.run.model.encode_video
    monkeypatch.setattr(g.run.model, "encode_video", lambda *a: calls.append(1) or encode(*a))
    found = g.ground_many(videos, pairs, top_k=2, batch_size=3)
    assert len(calls) == 3 and len(found) == len(pairs)
    for (video_id, query), moments in zip(pairs, found):
        alone = g.ground(videos[video_id], query, top_k=2)
        np.testing.assert_allclose(
            [[m.start, m.end] for m in moments], [[m.start, m.end] for m in alone], atol=1e-4
        )


def test_device_choice() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(EmtmError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_clear_errors(run_dir: Path) -> None:
    g = Grounder.load(run_dir, device="cpu")
    features = np.zeros((10, 64), dtype=np.float32)
    with pytest.raises(EmtmError, match=r"expects \(T, 64\)"):
        g.ground(np.zeros((10, 32)), "a query", duration=10.0)
    with pytest.raises(EmtmError, match="non-empty string"):
        g.ground(features, "  ", duration=10.0)
    with pytest.raises(EmtmError, match="duration must be a positive"):
        g.ground(features, "a query", duration=-1.0)
    with pytest.raises(EmtmError, match="top_k must be >= 1"):
        g.ground(features, "a query", duration=10.0, top_k=0)
    with pytest.raises(EmtmError, match="video 'nope' is not in the videos given"):
        g.ground_many({"v": features}, [("v", "a query"), ("nope", "a query")])
    with pytest.raises(EmtmError, match=r"queries\[0\] must be a \(video_id, sentence\) pair"):
        g.ground_many({"v": features}, ["a query"])
    with pytest.raises(EmtmError, match="no config.json"):
        Grounder.load(run_dir.parent / "nowhere")


def test_a_distilled_run_gives_its_student(run_dir: Path, tmp_path: Path) -> None:
    """A joint EMTM run: Grounder.load uses the student (from student/ when exported, else in memory)."""
    loaded = load_run(run_dir)
    options = {**loaded.cfg.model_options, "n_teachers": 2}
    torch.manual_seed(3)
    word_vectors = loaded.model.encoder.words.vectors
    spec = loaded.spec
    joint = build_model("emtm", model_config("emtm", options), spec.to_spec(word_vectors)).eval()
    emtm_dir = tmp_path / "emtm"
    cfg = loaded.cfg.model_copy(update={"model": "emtm", "model_options": options})
    write_run_config(emtm_dir, cfg, spec)
    loaded.vocab.save(emtm_dir / "vocab.json")
    save_weights(joint, emtm_dir / "model.safetensors")

    features = np.random.default_rng(0).normal(size=(30, 64)).astype(np.float32)
    in_memory = Grounder.load(emtm_dir, device="cpu")
    assert in_memory.run.cfg.model == "student" and not hasattr(in_memory.run.model, "kau")
    with torch.no_grad():
        batch = collate([{**make_item(30, 4, seed=0, video_dim=64), "video": features}])
        expected = joint(batch)
        got = in_memory.run.model(batch)
    torch.testing.assert_close(got["start_logits"], expected["start_logits"])

    export_student(emtm_dir)
    from_folder = Grounder.load(emtm_dir, device="cpu")
    assert from_folder.run.run_dir == emtm_dir / "student"
    query = "a person opens the door"
    assert from_folder.ground(features, query, duration=30.0) == in_memory.ground(
        features, query, duration=30.0
    )


# ---------------------------------------------------------------------------------------------- fast path
def test_reduced_precision_runs_the_model_under_autocast(run_dir: Path, tiny_data: Path) -> None:
    store = prepare(load_data_config(tiny_data), 0, ("test",)).store
    features = store.load(store.video_ids()[0])
    fp32 = Grounder.load(run_dir, device="cpu")
    bf16 = Grounder.load(run_dir, device="cpu", precision="bf16")
    assert "bf16" in repr(bf16) and "bf16" not in repr(fp32)
    video32, video16 = fp32.encode_video(features), bf16.encode_video(features)
    enc32, enc16 = video32.prepared.encoded, video16.prepared.encoded.float()
    assert not torch.equal(enc32, enc16)  # the video branch's matmuls and convs ran in bf16 ...
    torch.testing.assert_close(enc16, enc32, rtol=0.05, atol=0.05)  # ... with bf16's small errors
    query = "a person opens the door"
    best32, best16 = video32.ground(query, top_k=1), video16.ground(query, top_k=1)
    assert 0.0 <= best16.start < best16.end <= video16.duration + 1e-6
    assert best16.score == pytest.approx(best32.score, rel=0.1, abs=0.02)  # bf16: close, not equal
    found = bf16.ground_many({"v": features}, [("v", query)], {"v": video16.duration})
    assert found == [best16]


def test_cast_converts_the_weights_once_and_grounds_without_autocast(
    run_dir: Path, tiny_data: Path, monkeypatch
) -> None:
    store = prepare(load_data_config(tiny_data), 0, ("test",)).store
    features = store.load(store.video_ids()[0])
    fp32 = Grounder.load(run_dir, device="cpu")
    cast = Grounder.load(run_dir, device="cpu", precision="bf16", cast=True)
    assert {p.dtype for p in cast.run.model.parameters()} == {torch.bfloat16} and "bf16 cast" in repr(cast)
    monkeypatch.setattr(torch, "autocast", None)  # any autocast from here on would fail
    video32, video16 = fp32.encode_video(features), cast.encode_video(features)
    assert video16.prepared.encoded.dtype == torch.bfloat16  # features went in as bf16
    torch.testing.assert_close(video16.prepared.encoded.float(), video32.prepared.encoded, rtol=0.1, atol=0.1)
    query = "a person opens the door"
    best32, best16 = video32.ground(query), video16.ground(query)
    assert 0.0 <= best16.start < best16.end <= video16.duration + 1e-6
    assert best16.score == pytest.approx(best32.score, rel=0.1, abs=0.02)
    assert cast.ground_many({"v": features}, [("v", query)], {"v": video16.duration}) == [best16]
    long = np.concatenate([features] * 3)  # sliding windows: each window's features in bf16 too
    assert cast.ground(long, query, duration=3 * video16.duration, long_video="window").end > 0
    with pytest.raises(EmtmError, match="cast converts the weights to the precision"):
        Grounder.load(run_dir, device="cpu", cast=True)


def test_compile_wraps_the_students_entry_points(run_dir: Path, tiny_data: Path, monkeypatch) -> None:
    import emtm.engine.speed as speed

    compiled = []

    def fake_compile(fn, mode=None, dynamic=None):  # records what would be compiled, runs it as is
        compiled.append((getattr(fn, "__name__", type(fn).__name__), mode))
        return fn

    monkeypatch.setattr(speed.torch, "compile", fake_compile)
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, **kw: compiled.append(("forward", kw["mode"]))
    )
    store = prepare(load_data_config(tiny_data), 0, ("test",)).store
    features = store.load(store.video_ids()[0])
    g = Grounder.load(run_dir, device="cpu", compile="reduce-overhead")
    assert sorted(compiled) == [
        ("encode_video", "reduce-overhead"),
        ("forward", "reduce-overhead"),
        ("ground_encoded", "reduce-overhead"),
    ]
    plain = Grounder.load(run_dir, device="cpu")
    assert g.ground(features, "a man sits down") == plain.ground(features, "a man sits down")


def test_fast_path_options_are_checked() -> None:
    from emtm.engine import speed

    with pytest.raises(EmtmError, match="fp16 needs a CUDA device"):
        speed.check_precision("fp16", torch.device("cpu"))
    with pytest.raises(EmtmError, match="choose one of fp32, fp16, bf16"):
        speed.check_precision("fp8", torch.device("cpu"))
    with pytest.raises(EmtmError, match="compile mode 'fast': choose one of default, reduce-overhead"):
        speed.compile_model(torch.nn.Linear(2, 2), "fast")
