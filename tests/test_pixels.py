"""The real-pixel benchmark: idx reading, scripts whose every sentence picks out one event, frames, the
build through `emtm extract` with its cache, and the method trained end to end on `small-pixels`."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from emtm.cli import main
from emtm.config import load_data_config
from emtm.data import pixels
from emtm.data.dataset import load_splits
from emtm.data.pixels import (
    CLASSES,
    COLOURS,
    MOTIONS,
    ORDINALS,
    PIXEL_PRESETS,
    Appearance,
    ImageSet,
    PixelConfig,
    PixelQuery,
    make_scripts,
    read_idx,
    render_frames,
    resolve,
)
from emtm.data.text import load_word_vectors, tokenize
from emtm.errors import ConfigError, DataError

HAVE_IMAGES = (pixels.DEFAULT_IMAGES / "train-images-idx3-ubyte.gz").exists()
NEED_IMAGES = pytest.mark.skipif(
    not HAVE_IMAGES, reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)"
)


def write_idx(path: Path, array: np.ndarray) -> Path:
    raw = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def fake_images(n_train: int = 200, n_test: int = 50, seed: int = 0) -> ImageSet:
    """Random 28x28 'photographs'; train and test labels laid out differently, so a wrong pool shows."""
    rng = np.random.default_rng(seed)
    images = (rng.random((n_train + n_test, 28, 28)) * 255).astype(np.uint8)
    train_labels = np.arange(n_train) % 10
    test_labels = (np.arange(n_test) * 3 + 1) % 10
    return ImageSet(
        images[:n_train], train_labels.astype(np.uint8), images[n_train:], test_labels.astype(np.uint8)
    )


def test_idx_files_are_read_plain_or_gzipped(tmp_path: Path) -> None:
    images = (np.arange(3 * 28 * 28) % 256).astype(np.uint8).reshape(3, 28, 28)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        assert np.array_equal(read_idx(write_idx(tmp_path / name, images)), images)


def test_damaged_idx_files_name_the_file_and_what_was_expected(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "good", np.zeros((2, 28, 28), np.uint8))
    cut = tmp_path / "cut"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(cut)
    assert str(cut) in str(err.value)
    (tmp_path / "text").write_text("hello world")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "text")


def test_missing_images_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as err:
        pixels.load_images(tmp_path)
    assert "--images DIR" in str(err.value) and "train-images-idx3-ubyte" in str(err.value)


def test_images_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    for key, name in pixels.IDX_FILES.items():
        shape = (10, 28, 27) if key.endswith("images") else (10,)
        write_idx(tmp_path / name, (np.arange(int(np.prod(shape))) % 10).astype(np.uint8).reshape(shape))
    with pytest.raises(DataError, match=r"expected \(N, 28, 28\) uint8 images"):
        pixels.load_images(tmp_path)


def ev(cls: int, colour: str, start: float, end: float) -> Appearance:
    return Appearance(cls, colour, 0, start, end, "left", 0.7, 0.3, 0.3, 0.3)


def test_resolve_finds_every_event_a_query_can_mean() -> None:
    # red bag twice, a blue coat between them, a blue bag overlapping the second red bag
    events = [ev(8, "red", 0, 5), ev(4, "blue", 6, 9), ev(8, "red", 10, 15), ev(8, "blue", 12, 16)]
    assert resolve(events, PixelQuery(0, "single", "")) == [0, 2]  # ambiguous: never written
    assert resolve(events, PixelQuery(2, "ordinal", "", ordinal=2)) == [2]
    assert resolve(events, PixelQuery(0, "ordinal", "", ordinal=3)) == []
    assert resolve(events, PixelQuery(2, "after", "", reference=1)) == [2]
    assert resolve(events, PixelQuery(0, "before", "", reference=1)) == [0]
    assert resolve(events, PixelQuery(2, "while", "", reference=3)) == [2]
    assert resolve(events, PixelQuery(3, "single", "")) == [3]  # same class, other colour: unique
    events.append(ev(4, "blue", 20, 22))  # the coat now occurs twice: it can no longer name an event
    assert resolve(events, PixelQuery(2, "after", "", reference=1)) == []


def test_every_query_picks_out_exactly_one_event_and_says_so() -> None:
    cfg = replace(PIXEL_PRESETS["small-pixels"], n_train_videos=150, n_test_videos=40)
    scripts = make_scripts(cfg, fake_images())
    kinds = set()
    for split in scripts.values():
        for script in split:
            assert 1 <= len(script.queries) <= cfg.queries_per_video
            for q in script.queries:
                assert resolve(script.events, q) == [q.event]
                kinds.add(q.kind)
                target = script.events[q.event]
                assert f"the {target.colour} {CLASSES[target.cls]} " in q.sentence
                if q.kind == "ordinal":
                    assert f"for the {ORDINALS[q.ordinal - 1]} time." in q.sentence
                if q.kind in ("after", "before", "while"):
                    assert script.events[q.reference].name() in q.sentence
    assert kinds == set(pixels.QUERY_KINDS)


def test_videos_repeat_items_overlap_and_have_distractors() -> None:
    cfg = replace(PIXEL_PRESETS["small-pixels"], n_train_videos=150, n_test_videos=0)
    scripts = make_scripts(cfg, fake_images())["train"]
    exact = partial = overlap = 0
    for s in scripts:
        items = [e.item for e in s.events]
        exact += len(set(items)) < len(items)
        partial += any((a[0] == b[0]) != (a[1] == b[1]) for i, a in enumerate(items) for b in items[i + 1 :])
        on_screen = [sum(e.start <= t < e.end for e in s.events) for t in np.arange(0, s.duration, 0.25)]
        assert max(on_screen) <= 2
        overlap += max(on_screen) == 2
        for d in s.distractors:  # share the class or the colour of an event, never both
            assert d.item not in items and d.end - d.start <= 1.25 and d.motion is None
        assert 2 <= len(s.events) <= 5 and cfg.min_duration <= s.duration <= cfg.max_duration
    assert exact > 20 and partial > 20 and overlap > 20
    assert sum(len(s.distractors) for s in scripts) > 100


def test_train_items_come_from_training_images_and_test_items_from_test_images() -> None:
    images = fake_images()
    scripts = make_scripts(
        replace(PIXEL_PRESETS["small-pixels"], n_train_videos=30, n_test_videos=30), images
    )
    for split, labels in (("train", images.train_labels), ("test", images.test_labels)):
        for s in scripts[split]:
            for a in s.events + s.distractors:
                assert labels[a.image] == a.cls


def test_every_sentence_word_is_in_glove() -> None:
    glove = set(load_word_vectors("glove-6b-50d").words)
    words = {*CLASSES, *COLOURS, *ORDINALS, "the", "for", "time", "after", "before", "while", "leaves"}
    words |= {
        "appears",
        "is",
        "on",
        "screen",
        *(w for phrases in MOTIONS.values() for p in phrases for w in p.split()),
    }
    cfg = replace(PIXEL_PRESETS["small-pixels"], n_train_videos=40, n_test_videos=0)
    for s in make_scripts(cfg, fake_images())["train"]:
        for q in s.queries:
            words |= set(tokenize(q.sentence))
    assert not {w for w in words if w not in glove and w.isalpha()}
    assert not set().union(*(tokenize(w) for w in words)) - glove


def test_frames_show_the_items_over_a_moving_textured_background() -> None:
    images = fake_images()
    cfg = replace(PIXEL_PRESETS["small-pixels"], n_train_videos=5, n_test_videos=0, distractors_per_video=0)
    script = make_scripts(cfg, images)["train"][0]
    frames = render_frames(cfg, script, images)
    assert frames.shape == (round(script.duration * cfg.video_fps), 112, 112, 3) and frames.dtype == np.uint8
    assert frames[0].std() > 5  # textured, not flat
    times = (np.arange(len(frames)) + 0.5) / cfg.video_fps
    empty = [i for i, t in enumerate(times) if not any(e.start <= t < e.end for e in script.events)]
    assert len(empty) >= 2 and np.abs(frames[empty[0]].astype(int) - frames[empty[-1]]).mean() > 1  # it moves
    event = script.events[0]
    middle = int((event.start + event.end) / 2 * cfg.video_fps)
    cleaned = replace(script, events=[], distractors=[])
    diff = np.abs(frames[middle].astype(int) - render_frames(cfg, cleaned, images)[middle]).sum(-1)
    assert (diff > 60).sum() > 50  # the item is there, in its colour
    assert np.array_equal(frames, render_frames(cfg, script, images))  # seeded: the same bytes again


def test_pixel_config_knobs_are_checked() -> None:
    with pytest.raises(ConfigError, match="min_events"):
        PixelConfig(min_events=0)
    with pytest.raises(ConfigError, match="repeat_share"):
        PixelConfig(repeat_share=1.5)


@pytest.fixture(scope="module")
def mini_pixels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A few videos through the real pipeline: H.264 files, `emtm extract`, annotations and data.yaml."""
    from emtm.extract.pixel_benchmark import generate_pixels

    root = tmp_path_factory.mktemp("mini-pixels")
    cfg = replace(PIXEL_PRESETS["small-pixels"], n_train_videos=6, n_test_videos=3, max_duration=20.0)
    images = root / "images"
    images.mkdir()
    fake = fake_images()
    for key, name in pixels.IDX_FILES.items():
        write_idx(images / f"{name}.gz", getattr(fake, key))
    return generate_pixels(cfg, root / "out", images=images, cache=root / "cache", progress=False), images


def test_the_build_goes_through_the_extractor_and_writes_a_usable_dataset(mini_pixels) -> None:
    yaml_path, _ = mini_pixels
    data = yaml.safe_load(yaml_path.read_text())
    assert data["pixels"]["extract"]["backbone"] == "efficientnet-lite0"
    index = json.loads((yaml_path.parent / "features" / "features.json").read_text())
    assert index["backbone"] == "efficientnet-lite0@112px" and index["fps"] == 2.0
    assert len(index["videos"]) == 9
    assert all(Path(v["source"]).suffix == ".mp4" for v in index["videos"].values())
    splits = load_splits(load_data_config(yaml_path), seed=0, names=("train", "test"))
    for split in splits.values():
        for sample in split.samples:
            feats = np.load(yaml_path.parent / "features" / f"{sample.video_id}.npy")
            assert feats.shape == (int(np.ceil(sample.duration - 1e-6)), 1280)
            assert feats.min() >= 0 and (feats == 0).mean() > 0.2  # what a CNN after ReLU gives
    queries = json.loads((yaml_path.parent / "queries.json").read_text())
    assert set(queries["kind_shares"]) == {"train", "test"}


def test_a_second_build_renders_and_extracts_nothing(mini_pixels, tmp_path: Path, monkeypatch) -> None:
    from emtm.extract import pixel_benchmark

    yaml_path, images = mini_pixels
    cache = yaml_path.parent.parent / "cache"

    def forbidden(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pixel_benchmark, "render_frames", forbidden)
    monkeypatch.setattr(pixel_benchmark, "extract_videos", forbidden)
    cfg = replace(PIXEL_PRESETS["small-pixels"], n_train_videos=6, n_test_videos=3, max_duration=20.0)
    again = pixel_benchmark.generate_pixels(
        cfg, tmp_path / "again", images=images, cache=cache, progress=False
    )
    assert (again.parent / "train.txt").read_text() == (yaml_path.parent / "train.txt").read_text()
    other = replace(cfg, seed=1)  # another config: another key, so it must render
    with pytest.raises(AssertionError, match="cache should have been used"):
        pixel_benchmark.generate_pixels(other, tmp_path / "other", images=images, cache=cache, progress=False)


@NEED_IMAGES
def test_small_pixels_trains_the_student_a_teacher_and_emtm(tmp_path: Path, capsys) -> None:
    """The issue's bar: a fresh clone builds small-pixels and trains the student, a teacher and EMTM."""
    out = tmp_path / "small-pixels"
    assert (
        main(["synth", "--preset", "small-pixels", "--out", str(out), "--cache", str(tmp_path / "cache")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "prior baseline" in printed and "query kinds" in printed
    data = str(out / "data.yaml")
    fast = ["--epochs", "2", "--batch-size", "32", "--device", "cpu", "--no-progress"]
    assert (
        main(["train", "--data", data, "--model", "regress", "--out", str(tmp_path / "regress"), *fast]) == 0
    )
    cache = tmp_path / "regress.h5"
    export = ["teachers", "export", "--run", str(tmp_path / "regress"), "--data", data, "--out", str(cache)]
    assert main([*export, "--device", "cpu", "--no-progress"]) == 0
    assert main(["train", "--data", data, "--out", str(tmp_path / "student"), *fast]) == 0
    run = tmp_path / "emtm"
    assert main(["distill", "--data", data, "--teachers", str(cache), "--out", str(run), *fast]) == 0
    report = tmp_path / "test.json"
    assert main(["evaluate", "--run", str(run / "student"), "--json", str(report), "--no-progress"]) == 0
    assert json.loads(report.read_text())["n_queries"] > 100
