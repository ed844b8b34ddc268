"""Hostile and broken inputs: every loader gives a clean result or a clear emtm error, never a crash.

Property-based (hypothesis) tests feed random corruptions to the annotation readers, the feature stores,
data.yaml, the teacher import and the run loader: truncated and bit-flipped files, wrong types, NaN/Inf,
negative or reversed times, zero durations, empty sentences, unicode, huge lines and duplicate ids. The
property: the call returns a result that satisfies the loader's contract, or raises an `EmtmError` whose
message names the file. Any other exception fails the test (hypothesis then shrinks it to a minimal input).
Runs are deterministic (derandomize, no example database) and small enough for CI.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from emtm.config import DataConfig, TrainConfig, load_data_config
from emtm.data.annotations import FORMATS, read_annotations
from emtm.data.features import H5Store, NpyDirStore, open_feature_store, write_h5, write_npy_dir
from emtm.data.records import ReadReport, Sample
from emtm.data.text import PAD, UNK, Vocab
from emtm.distill.cache import TeacherCache, import_outputs
from emtm.engine.checkpoint import LoadedRun, SpecInfo, load_run, save_weights, write_run_config
from emtm.errors import DataError, EmtmError
from emtm.models.registry import build_model, model_config, model_names


def hostile(max_examples: int) -> settings:
    """Deterministic, bounded hypothesis settings; the deadline only catches pathological slowness."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=timedelta(seconds=30),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def clean_or_emtm(call: Callable[[], Any], *paths: Path) -> Any | None:
    """call()'s result, or None if it raised an EmtmError naming one of `paths`; anything else propagates."""
    try:
        result = call()
    except EmtmError as err:
        event(f"refused: {type(err).__name__}")  # see them with pytest --hypothesis-show-statistics
        message = str(err)
        assert any(str(p) in message for p in paths), f"error names none of {paths}: {message}"
        assert len(message) < 4000, f"error message of {len(message)} characters"
        return None
    event("clean result")
    return result


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per hypothesis example (pytest's tmp_path is shared by all examples of a test)."""
    with tempfile.TemporaryDirectory(prefix="emtm-hostile-") as folder:
        yield Path(folder)


# --------------------------------------------------------------------------------------------
# Building blocks: junk values and byte-level corruptions

HUGE_INT = 10**400  # valid JSON, but past float range
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.just(HUGE_INT),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
TIMES = st.one_of(
    st.floats(-20, 150),
    st.integers(-5, 200),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, HUGE_INT]),
)
EDGE_NUMBERS = st.sampled_from([0, 0.0, -3.0, math.nan, math.inf, 1e-320, HUGE_INT])
DURATIONS = st.one_of(st.floats(0.5, 120), st.integers(1, 120), EDGE_NUMBERS, JUNK)
PAIRS = st.one_of(st.lists(TIMES, min_size=2, max_size=2), JUNK)
SENTENCES = st.one_of(
    st.text(max_size=30), st.sampled_from(["", "   ", "a person opens the door", "ü 🎬 \u200b\u2028x"]), JUNK
)

CORRUPTIONS = ("keep",) * 5 + ("truncate", "flip", "splice", "bad_utf8", "huge_line", "duplicate")


def corrupt(data: st.DataObject, raw: bytes) -> bytes:
    """`raw` as is, truncated, bit-flipped, spliced with junk or bad UTF-8, with a huge line, or doubled."""
    op = data.draw(st.sampled_from(CORRUPTIONS), label="corruption")
    at = data.draw(st.one_of(st.just(0), st.integers(0, len(raw))), label="position")
    if op == "truncate":
        return raw[:at]
    if op == "flip" and raw:
        flipped = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 3))):
            flipped[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(flipped)
    if op == "splice":
        return raw[:at] + data.draw(st.binary(max_size=12)) + raw[at:]
    if op == "bad_utf8":
        return raw[:at] + b"\xff\xfe\xc3" + raw[at:]
    if op == "huge_line":  # at the start, or the end: an earlier error must not hide it
        line = data.draw(st.sampled_from([b"x", b"7", b"[", b"a 1 2##"])) * 300_000
        return line + b"\n" + raw if data.draw(st.booleans()) else raw + b"\n" + line
    if op == "duplicate":
        return raw + b"\n" + raw
    return raw


def dumps(data: st.DataObject, obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=data.draw(st.booleans(), label="ascii"))


# --------------------------------------------------------------------------------------------
# Annotation readers


def check_samples(samples: list[Sample], report: ReadReport) -> None:
    """The readers' contract for a clean result."""
    assert report.n_read == report.n_kept + report.n_dropped and report.n_kept == len(samples)
    assert len({s.sample_id for s in samples}) == len(samples), "duplicate sample ids"
    for s in samples:
        assert math.isfinite(s.duration) and s.duration > 0
        assert 0.0 <= s.start < s.end <= s.duration
        assert s.sentence and s.sentence == s.sentence.strip()
        assert s.video_id and s.sample_id


KNOWN_VIDS = ["v1", "v2", "v_1", "ü"]
VIDS = st.one_of(st.sampled_from(KNOWN_VIDS), st.text(max_size=6))


@st.composite
def charades_line(draw: st.DrawFn) -> str:
    vid = draw(st.one_of(st.sampled_from(KNOWN_VIDS), VIDS))
    start, end = (draw(st.one_of(TIMES.map(str), TIMES.map(str), st.text(max_size=4))) for _ in range(2))
    separator = draw(st.sampled_from(["##", "##", "##", "#", "", " ## "]))
    sentence = draw(
        st.one_of(
            st.sampled_from(["a person sits.", "ü 🎬 opens\u2028the door", "x##y"]), st.text(max_size=30)
        )
    )
    return f"{vid} {start} {end}{separator}{sentence}"


@hostile(100)
@given(data=st.data())
def test_charades_sta_is_clean_or_a_clear_error(data: st.DataObject) -> None:
    lines = data.draw(st.lists(charades_line(), max_size=6), label="lines")
    durations = {vid: data.draw(st.one_of(st.floats(1, 120), DURATIONS)) for vid in KNOWN_VIDS}
    durations.update(data.draw(st.dictionaries(VIDS, DURATIONS, max_size=1), label="durations"))
    as_csv = data.draw(st.booleans(), label="csv")
    broken = data.draw(st.sampled_from(["annotations", "durations"]), label="corrupted file")
    with scratch() as tmp:
        ann = tmp / "train.txt"
        text = "\n".join(lines).encode()
        ann.write_bytes(corrupt(data, text) if broken == "annotations" else text)
        if as_csv:
            dur = tmp / "Charades_v1_train.csv"
            text = ("id,length\n" + "".join(f"{vid},{value}\n" for vid, value in durations.items())).encode()
        else:
            dur = tmp / "durations.json"
            text = dumps(data, durations).encode()
        dur.write_bytes(corrupt(data, text) if broken == "durations" else text)
        result = clean_or_emtm(lambda: read_annotations(ann, "charades_sta", dur), ann, dur)
    if result is not None:
        check_samples(*result)


@st.composite
def anet_record(draw: st.DrawFn) -> Any:
    n = draw(st.integers(0, 3))
    record = {
        "duration": draw(DURATIONS),
        "timestamps": [draw(PAIRS) for _ in range(n)],
        "sentences": [draw(SENTENCES) for _ in range(n + draw(st.sampled_from([0, 0, 0, 1])))],
    }
    for key in draw(st.lists(st.sampled_from(sorted(record)), max_size=1)):
        if draw(st.booleans()):
            del record[key]
        else:
            record[key] = draw(JUNK)
    return record


@st.composite
def tacos_record(draw: st.DrawFn) -> Any:
    record = draw(anet_record())
    if "duration" in record:
        record["num_frames"] = record.pop("duration")
    record["fps"] = draw(st.one_of(st.sampled_from([25, 29.4, 30.0]), DURATIONS))
    return record


@hostile(60)
@given(data=st.data(), fmt=st.sampled_from(["activitynet", "tacos"]))
def test_video_keyed_json_is_clean_or_a_clear_error(data: st.DataObject, fmt: str) -> None:
    record = anet_record() if fmt == "activitynet" else tacos_record()
    keys = st.sampled_from(["v1", "v1.avi", "v2.avi", "ü"]) | st.text(max_size=5)
    obj = data.draw(st.one_of(st.dictionaries(keys, record, max_size=3), JUNK), label="file")
    with scratch() as tmp:
        ann = tmp / "train.json"
        ann.write_bytes(corrupt(data, dumps(data, obj).encode()))
        result = clean_or_emtm(lambda: read_annotations(ann, fmt), ann)
    if result is not None:
        check_samples(*result)


@st.composite
def jsonl_record(draw: st.DrawFn) -> Any:
    record = {
        "qid": draw(st.one_of(st.integers(0, 3), st.sampled_from(["0", "1", "q"]), JUNK)),
        "query": draw(SENTENCES),
        "vid": draw(st.one_of(VIDS, JUNK)),
        "duration": draw(DURATIONS),
        "relevant_windows": draw(st.one_of(st.lists(PAIRS, max_size=3), JUNK)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(record)), max_size=1)):
        del record[key]
    return draw(st.one_of(st.just(record), st.just(record), JUNK))


@hostile(100)
@given(data=st.data())
def test_jsonl_is_clean_or_a_clear_error(data: st.DataObject) -> None:
    records = data.draw(st.lists(jsonl_record(), max_size=5), label="records")
    with scratch() as tmp:
        ann = tmp / "train.jsonl"
        text = "\n".join(dumps(data, r) for r in records)
        ann.write_bytes(corrupt(data, text.encode()))
        result = clean_or_emtm(lambda: read_annotations(ann, "jsonl"), ann)
    if result is not None:
        check_samples(*result)


@pytest.mark.parametrize("fmt", FORMATS)
def test_huge_single_line_is_refused_with_a_short_message(fmt: str, tmp_path: Path) -> None:
    ann = tmp_path / "huge.txt"
    ann.write_text("[" * 200_000 + "1" * 5000 + "x" * 2_000_000)
    durations = tmp_path / "d.json"
    durations.write_text('{"v": 1.0}')
    with pytest.raises(DataError) as info:
        read_annotations(ann, fmt, durations)
    assert str(ann) in str(info.value) and len(str(info.value)) < 1000


# --------------------------------------------------------------------------------------------
# Feature stores

FLOAT_DTYPES = [np.float32, np.float64, np.float16]
OTHER_DTYPES = [np.int32, np.uint8, np.bool_, np.complex64]
GOOD = hnp.arrays(
    st.sampled_from(FLOAT_DTYPES),
    st.tuples(st.integers(1, 5), st.just(3)),
    elements=st.floats(-10, 10, width=16),
)
ANY_ARRAY = hnp.arrays(
    st.sampled_from(FLOAT_DTYPES + OTHER_DTYPES),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


def check_features(store: Any, video_ids: list[str]) -> None:
    """Each listed video loads as finite (T, D) float32 with the store's D, or fails naming the file."""
    for vid in video_ids:
        feats = clean_or_emtm(lambda vid=vid: store.load(vid), store.path)
        if feats is None:
            continue
        assert feats.dtype == np.float32 and feats.ndim == 2 and feats.shape[0] > 0
        assert feats.shape[1] == store.dim and np.isfinite(feats).all()


@hostile(50)
@given(data=st.data(), arrays=st.lists(st.one_of(GOOD, GOOD, ANY_ARRAY), min_size=1, max_size=3))
def test_npy_store_is_clean_or_a_clear_error(data: st.DataObject, arrays: list[np.ndarray]) -> None:
    with scratch() as tmp:
        folder = tmp / "feats"
        folder.mkdir()
        for i, array in enumerate(arrays):
            file = folder / f"vid{i}.npy"
            how = data.draw(st.sampled_from(["save", "save", "pickled", "bytes"]), label="write")
            if how == "pickled":  # an object array: loading it would need pickle
                objects = np.empty((1, 2), dtype=object)
                objects[0, 0] = array
                np.save(file, objects, allow_pickle=True)
            else:
                np.save(file, array, allow_pickle=False)
                if how == "bytes":
                    file.write_bytes(corrupt(data, file.read_bytes()))
        store = open_feature_store(folder)
        check_features(store, store.video_ids())


@hostile(40)
@given(data=st.data(), arrays=st.lists(st.one_of(GOOD, GOOD, ANY_ARRAY), min_size=1, max_size=3))
def test_h5_store_is_clean_or_a_clear_error(data: st.DataObject, arrays: list[np.ndarray]) -> None:
    with scratch() as tmp:
        path = tmp / "feats.h5"
        with h5py.File(path, "w") as f:
            for i, array in enumerate(arrays):
                f.create_dataset(f"vid{i}", data=array)
            if data.draw(st.booleans(), label="extras"):
                f.create_dataset("text", data=np.array([b"ab", b"c"]))
                f.create_group("group").create_dataset("inner", data=np.zeros((2, 3)))
        path.write_bytes(corrupt(data, path.read_bytes()))
        store = H5Store(path)
        try:
            video_ids = clean_or_emtm(store.video_ids, path)
            if video_ids is not None:
                check_features(store, video_ids)
        finally:
            store.close()


NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf, 1e39])  # 1e39 is past float32 range


@hostile(30)
@given(
    kind=st.sampled_from(["npy", "h5"]),
    features=GOOD,
    bad=NONFINITE,
    where=st.tuples(st.integers(0, 4), st.integers(0, 2)),
    first=st.booleans(),
)
def test_nonfinite_features_are_refused_naming_video_and_file(
    kind: str, features: np.ndarray, bad: float, where: tuple[int, int], first: bool
) -> None:
    """The NaN/Inf policy: refused on every store path, never repaired silently."""
    broken = features.astype(np.float64)
    broken[where[0] % len(broken), where[1]] = bad
    vid = "aaa" if first else "zzz"  # first: the store reads D from it; otherwise a later video
    videos = {"mmm": np.ones((2, 3), np.float32), vid: broken}
    with scratch() as tmp:
        if kind == "npy":
            write_npy_dir({"mmm": videos["mmm"]}, tmp / "f")
            np.save(tmp / "f" / f"{vid}.npy", broken)  # float64, so 1e39 is stored as is
            store, file = open_feature_store(tmp / "f"), tmp / "f" / f"{vid}.npy"
        else:
            with h5py.File(tmp / "f.h5", "w") as f:
                for name, array in videos.items():
                    f.create_dataset(name, data=array)
            store, file = open_feature_store(tmp / "f.h5"), tmp / "f.h5"
        with pytest.raises(DataError) as info:
            store.load(vid)
        message = str(info.value)
        assert repr(vid) in message and str(file) in message and "NaN or Inf" in message
        if kind == "h5":
            store.close()


@pytest.mark.parametrize("video_id", ["", ".", "..", "../outside", "sub/inner", "a\0b"])
def test_npy_store_refuses_ids_that_are_not_file_names(video_id: str, tmp_path: Path) -> None:
    write_npy_dir({"v": np.ones((2, 3))}, tmp_path / "feats")
    write_npy_dir({"outside": np.ones((2, 3)), "inner": np.ones((2, 3))}, tmp_path)  # readable if it escaped
    (tmp_path / "feats" / "sub").mkdir()
    np.save(tmp_path / "feats" / "sub" / "inner.npy", np.ones((2, 3)))
    store = NpyDirStore(tmp_path / "feats")
    assert video_id not in store
    with pytest.raises(DataError) as info:
        store.load(video_id)
    assert repr(video_id) in str(info.value) and str(store.path) in str(info.value)


# --------------------------------------------------------------------------------------------
# data.yaml

BASE_DATA = {"format": "jsonl", "splits": {"train": "train.jsonl", "test": "test.jsonl"}, "features": "feats"}
PLAUSIBLE = {
    "format": st.sampled_from(["jsonl", "charades_sta", "tacos", "Charades", ""]),
    "splits": st.dictionaries(st.sampled_from(["train", "val", "test", ""]), st.text(max_size=8), max_size=3),
    "features": st.sampled_from(["feats", "", "~/x.h5", "/nonexistent"]),
    "durations": st.sampled_from([None, "d.json"]),
    "max_video_len": st.integers(-2, 100),
    "val_fraction": st.floats(allow_nan=True, allow_infinity=True),
    "skip_missing_videos": st.sampled_from([True, "yes", 2]),
    "root": st.sampled_from([".", "", "/"]),
}
YAML_VALUES = st.recursive(
    st.one_of(SCALARS, st.just(-0.0)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), inner)
    ),
    max_leaves=5,
)


@hostile(60)
@given(data=st.data())
def test_data_yaml_is_clean_or_a_config_error(data: st.DataObject) -> None:
    raw: Any = dict(BASE_DATA)
    for key in data.draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=3), label="edited"):
        raw[key] = data.draw(st.one_of(PLAUSIBLE[key], YAML_VALUES), label=key)
    for key in data.draw(st.lists(st.sampled_from(sorted(BASE_DATA)), max_size=1), label="deleted"):
        del raw[key]
    raw.update(data.draw(st.dictionaries(st.text(max_size=4) | st.integers(0, 3), YAML_VALUES, max_size=1)))
    if data.draw(st.integers(0, 9), label="junk file") == 0:
        raw = data.draw(YAML_VALUES)
    text = (
        yaml.safe_dump(raw, allow_unicode=data.draw(st.booleans()), sort_keys=False)
        if raw is not None
        else ""
    )
    with scratch() as tmp:
        path = tmp / "data.yaml"
        path.write_bytes(corrupt(data, text.encode()))
        cfg = clean_or_emtm(lambda: load_data_config(path), path)
    if cfg is not None:
        assert isinstance(cfg, DataConfig) and cfg.format in FORMATS and "train" in cfg.splits
        assert cfg.max_video_len >= 1 and 0 < cfg.val_fraction < 1
        assert isinstance(cfg.split_path("train"), Path)


# --------------------------------------------------------------------------------------------
# Teacher import

MINI_LENGTHS = {"va": 5, "vb": 7, "vc": 80}  # vc is longer than max_video_len (64)
MINI_IDS = [f"q{i}" for i in range(6)]


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-video, 6-query JSONL dataset with .npy features; returns its data.yaml."""
    root = tmp_path_factory.mktemp("mini")
    videos = list(MINI_LENGTHS)
    lines = [
        {
            "qid": qid,
            "query": f"query {i}",
            "vid": videos[i % 3],
            "duration": 10.0,
            "relevant_windows": [[1, 4]],
        }
        for i, qid in enumerate(MINI_IDS)
    ]
    (root / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_npy_dir({v: np.ones((n, 4), np.float32) for v, n in MINI_LENGTHS.items()}, root / "feats")
    (root / "data.yaml").write_text(yaml.safe_dump({**BASE_DATA, "splits": {"train": "train.jsonl"}}))
    return root / "data.yaml"


ID_ARRAYS = st.one_of(
    st.permutations(MINI_IDS).map(np.array),
    st.lists(st.sampled_from([*MINI_IDS, "zz", ""]), max_size=7).map(lambda ids: np.array(ids, dtype=str)),
    st.just(np.array([b"q0", b"\xff"])),
    st.just(np.array(MINI_IDS, dtype=object)),
    ANY_ARRAY,
)
LOGITS = hnp.arrays(
    st.sampled_from([np.float32, np.float64, np.float16]),
    st.tuples(st.sampled_from([6, 6, 5]), st.integers(0, 9)),
    elements=st.floats(-30, 30, width=16),
)
MAPS = hnp.arrays(
    np.float32,
    st.tuples(st.sampled_from([6, 6, 2]), st.integers(0, 5)).map(lambda s: (s[0], s[1], s[1])),
    elements=st.floats(0, 1, width=32),
)


def with_nonfinite(draw: st.DrawFn, array: np.ndarray) -> np.ndarray:
    """`array`, or a float copy with one NaN, +Inf, -Inf or out-of-range value (probabilities beyond 1)."""
    if array.size == 0 or not draw(st.booleans()):
        return array
    array = array.astype(np.float64)
    array.flat[draw(st.integers(0, array.size - 1))] = draw(
        st.sampled_from([np.nan, np.inf, -np.inf, 1.5, -2.0])
    )
    return array


@st.composite
def npz_arrays(draw: st.DrawFn, fmt: str) -> dict[str, np.ndarray]:
    arrays = {"sample_ids": draw(ID_ARRAYS)}
    if fmt == "span":
        arrays["start_logits"], arrays["end_logits"] = (with_nonfinite(draw, draw(LOGITS)) for _ in range(2))
        optional = {"lengths": st.one_of(hnp.arrays(np.int64, 6, elements=st.integers(-1, 10)), ANY_ARRAY)}
    else:
        arrays["scores"] = with_nonfinite(draw, draw(MAPS))
        optional = {"mask": ANY_ARRAY, "is_logits": st.one_of(st.booleans().map(np.array), ANY_ARRAY)}
    for key, strategy in optional.items():
        if draw(st.booleans()):
            arrays[key] = draw(strategy)
    for key in draw(st.lists(st.sampled_from(sorted(arrays)), max_size=1)):
        arrays[key] = draw(st.one_of(ANY_ARRAY, st.just(np.array([{"a": 1}], dtype=object))))
    return arrays


WINDOWS = st.one_of(st.lists(TIMES, min_size=2, max_size=3), JUNK)


@st.composite
def jsonl_outputs(draw: st.DrawFn, fmt: str) -> str:
    records = []
    for sid in draw(st.lists(st.sampled_from([*MINI_IDS, "zz"]) | JUNK, max_size=7)):
        record = {"sample_id": sid, "unit": draw(st.sampled_from(["seconds", "fraction", "frames"]) | JUNK)}
        if fmt == "regression":
            record["window"] = draw(WINDOWS)
        else:
            record["windows"] = draw(st.one_of(st.lists(WINDOWS, max_size=3), JUNK))
            if draw(st.booleans()):
                record["scores"] = draw(st.one_of(st.lists(TIMES, max_size=3), JUNK))
        for key in draw(st.lists(st.sampled_from(sorted(record)), max_size=1)):
            del record[key]
        records.append(draw(st.one_of(st.just(record), st.just(record), JUNK)))
    return "\n".join(json.dumps(r) for r in records)


def check_cache(path: Path) -> None:
    """A clean import: every entry is a finite (2, n) pair of distributions on the student grid."""
    with TeacherCache(path) as cache:
        for sid in cache.sample_ids():
            dist = cache.get(sid)
            video = ["va", "vb", "vc"][int(sid[1:]) % 3]
            assert dist.shape == (2, min(MINI_LENGTHS[video], 64))
            assert np.isfinite(dist).all() and (dist >= 0).all()
            np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-3)


@hostile(60)
@given(data=st.data(), fmt=st.sampled_from(["span", "2dmap", "proposals", "regression"]))
def test_teacher_import_is_clean_or_a_clear_error(data: st.DataObject, fmt: str, mini_data: Path) -> None:
    allow_missing = data.draw(st.booleans(), label="allow_missing")
    with scratch() as tmp:
        if fmt in ("span", "2dmap"):
            path = tmp / "outputs.npz"
            np.savez(path, **data.draw(npz_arrays(fmt), label="arrays"))  # object arrays get pickled
        else:
            path = tmp / "outputs.jsonl"
            path.write_text(data.draw(jsonl_outputs(fmt), label="lines"))
        path.write_bytes(corrupt(data, path.read_bytes()))
        out = tmp / "cache.h5"
        result = clean_or_emtm(
            lambda: import_outputs(fmt, path, mini_data, "train", out, allow_missing=allow_missing), path
        )
        if result is not None:
            check_cache(result)
        else:
            assert not out.exists(), "a failed import left a cache file"


# --------------------------------------------------------------------------------------------
# The run loader (config.json, vocab.json, model.safetensors)

RUN_FILES = ("config.json", "vocab.json", "model.safetensors")
SPEC = SpecInfo(video_dim=8, max_video_len=16, vocab_size=4, word_dim=6, n_chars=4)
OPTIONS = {"d": 16, "n_heads": 2}


@pytest.fixture(scope="module")
def run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained student run directory, as `emtm train` lays it out."""
    run = tmp_path_factory.mktemp("run") / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = build_model("student", model_config("student", OPTIONS), SPEC.to_spec())
    save_weights(model, run / "model.safetensors")
    write_run_config(run, TrainConfig(data="data.yaml", model="student", model_options=OPTIONS), SPEC)
    Vocab([PAD, UNK, "a", "b"], [PAD, UNK, "a", "b"]).save(run / "vocab.json")
    return run


CONFIG_EDITS = st.sampled_from(
    [
        ("format_version",),
        ("train",),
        ("train", "model"),
        ("train", "model_options"),
        ("train", "model_options", "d"),
        ("train", "model_options", "n_heads"),
        ("train", "model_options", "dropout"),
        ("spec",),
        *(("spec", name) for name in ("video_dim", "max_video_len", "vocab_size", "word_dim", "n_chars")),
        ("spec", "max_query_len"),
        ("spec", "extra"),
    ]
)
CONFIG_VALUES = st.one_of(
    st.integers(-2, 40),  # small sizes: an edited spec must not allocate gigabytes
    st.sampled_from([*model_names(), "nope", 1, 2, "1", None, 0.5, math.nan, True]),
    st.builds(dict),
    st.just({"d": 32}),
    st.lists(st.integers(0, 3), max_size=2),
)


def edit_json(obj: Any, keys: tuple[str, ...], value: Any, delete: bool) -> None:
    for key in keys[:-1]:
        if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
            return
        obj = obj[key]
    if delete:
        obj.pop(keys[-1], None)
    else:
        obj[keys[-1]] = value


def pickle_bytes(data: st.DataObject, template: Path) -> bytes:
    """A pickle-bearing file: torch.save's zip of pickles, or a bare pickle of the state dict."""
    state = {"w": torch.ones(2)}
    if data.draw(st.booleans(), label="torch.save"):
        torch.save(state, template / "pickled.pt")
        return (template / "pickled.pt").read_bytes()
    return pickle.dumps(state)


@hostile(60)
@given(data=st.data(), target=st.sampled_from(["weights", "weights", "config", "config", "vocab"]))
def test_load_run_is_clean_or_a_clear_error(data: st.DataObject, target: str, run_template: Path) -> None:
    with scratch() as tmp:
        run = tmp / "run"
        shutil.copytree(run_template, run)
        if target == "weights":
            file = run / "model.safetensors"
            if data.draw(st.integers(0, 3), label="pickle") == 0:
                with tempfile.TemporaryDirectory() as other:
                    file.write_bytes(pickle_bytes(data, Path(other)))
            else:
                file.write_bytes(corrupt(data, file.read_bytes()))
        elif target == "config":
            file = run / "config.json"
            config = json.loads(file.read_text())
            for _ in range(data.draw(st.integers(1, 2), label="n edits")):
                keys, delete = data.draw(CONFIG_EDITS), data.draw(st.integers(0, 3)) == 0
                edit_json(config, keys, data.draw(CONFIG_VALUES), delete)
            file.write_bytes(corrupt(data, dumps(data, config).encode()))
        else:
            file = run / "vocab.json"
            vocab = json.loads(file.read_text())
            key = data.draw(st.sampled_from(["words", "chars", "version"]))
            vocab[key] = data.draw(
                st.one_of(st.just([PAD, UNK, "a", "a"]), st.just([PAD, UNK, "a", "b", "c"]), JUNK)
            )
            file.write_bytes(corrupt(data, dumps(data, vocab).encode()))
        loaded = clean_or_emtm(lambda: load_run(run), file, *(run / name for name in RUN_FILES))
    if loaded is not None:
        assert isinstance(loaded, LoadedRun) and len(loaded.vocab) == loaded.spec.vocab_size
        assert all(
            torch.isfinite(p).all() for p in loaded.model.state_dict().values() if p.is_floating_point()
        )


def test_pickle_in_place_of_weights_is_refused_and_never_unpickled(
    run_template: Path, tmp_path: Path
) -> None:
    """A pickle whose loading would run code: refused as not safetensors, and the code never runs."""
    run = tmp_path / "run"
    shutil.copytree(run_template, run)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    (run / "model.safetensors").write_bytes(pickle.dumps({"w": Exploit()}))
    with pytest.raises(EmtmError, match="not a readable safetensors file") as info:
        load_run(run)
    assert str(run / "model.safetensors") in str(info.value)
    assert not marker.exists()


def test_nonfinite_weights_are_refused(run_template: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(run_template, run)
    tensors = load_file(str(run / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone().fill_(float("nan"))
    save_file(tensors, str(run / "model.safetensors"))
    with pytest.raises(EmtmError, match="NaN or Inf") as info:
        load_run(run)
    assert name in str(info.value) and str(run / "model.safetensors") in str(info.value)


def test_write_h5_and_store_round_trip_unicode_ids(tmp_path: Path) -> None:
    """Unicode video ids are fine in both stores (only '/', NUL, '.', '..' and '' are refused)."""
    features = {"ü 🎬": np.ones((2, 3)), "vid\u2028x": np.zeros((1, 3))}
    write_h5(features, tmp_path / "f.h5")
    write_npy_dir(features, tmp_path / "f")
    for store in (open_feature_store(tmp_path / "f.h5"), open_feature_store(tmp_path / "f")):
        assert store.video_ids() == sorted(features)
        for vid, array in features.items():
            np.testing.assert_array_equal(store.load(vid), array)
