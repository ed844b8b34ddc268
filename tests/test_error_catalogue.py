"""The catalogue of input errors: each broken input gets its error class and a message naming the file.

Every case builds one broken input in a fresh folder and checks the error's class and the substrings its
message must hold: the file (with `{tmp}` for the case's folder; line or field where there is one) and
what was expected. docs/ERRORS.md shows the real message of each case; regenerate its table with

    .venv/bin/python tests/test_error_catalogue.py
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import yaml

from emtm.config import DataConfig, TrainConfig, load_data_config
from emtm.data.annotations import read_annotations
from emtm.data.features import H5Store, NpyDirStore, open_feature_store, write_npy_dir
from emtm.data.text import PAD, UNK, Vocab
from emtm.distill.cache import import_outputs
from emtm.engine.checkpoint import SpecInfo, load_run, save_weights, write_run_config
from emtm.errors import ConfigError, DataError, EmtmError
from emtm.models.registry import build_model, model_config

REPO = Path(__file__).resolve().parents[1]
Call = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Call]  # writes the broken input into the folder; returns the failing call
    error: type[EmtmError]
    expect: tuple[str, ...]  # substrings of the message; "{tmp}" is the case's folder


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Annotation readers

DUR = '{"v1": 30.0, "v2": 12.5}'


def charades(text: str | bytes, durations: str = DUR, name: str = "durations.json") -> Callable[[Path], Call]:
    def build(tmp: Path) -> Call:
        ann, dur = write(tmp / "train.txt", text), write(tmp / name, durations)
        return lambda: read_annotations(ann, "charades_sta", dur)

    return build


def annotations(fmt: str, text: str | bytes, name: str = "train.json") -> Callable[[Path], Call]:
    def build(tmp: Path) -> Call:
        ann = write(tmp / name, text)
        return lambda: read_annotations(ann, fmt)

    return build


def anet(record: Any, vid: str = "v1") -> Callable[[Path], Call]:
    return annotations("activitynet", json.dumps({vid: record}))


def jsonl(*records: Any) -> Callable[[Path], Call]:
    good = {"qid": 0, "query": "a person sits", "vid": "v1", "duration": 30.0, "relevant_windows": [[1, 5]]}
    lines = [json.dumps(good)] + [
        r if isinstance(r, str) else json.dumps({**good, "qid": 1, **r}) for r in records
    ]
    return annotations("jsonl", "\n".join(lines), "train.jsonl")


def without(key: str) -> str:
    good = {"qid": 1, "query": "a person sits", "vid": "v1", "duration": 30.0, "relevant_windows": [[1, 5]]}
    return json.dumps({k: v for k, v in good.items() if k != key})


def missing_annotation(tmp: Path) -> Call:
    return lambda: read_annotations(tmp / "nope.txt", "jsonl")


def directory_annotation(tmp: Path) -> Call:
    (tmp / "train.jsonl").mkdir()
    return lambda: read_annotations(tmp / "train.jsonl", "jsonl")


def no_durations(tmp: Path) -> Call:
    ann = write(tmp / "train.txt", "v1 1 2##a person sits\n")
    return lambda: read_annotations(ann, "charades_sta")


def unknown_format(tmp: Path) -> Call:
    ann = write(tmp / "train.txt", "v1 1 2##a person sits\n")
    return lambda: read_annotations(ann, "charades")


ANNOTATION_CASES = [
    Case("unknown-format", unknown_format, DataError, ("{tmp}/train.txt", "expected one of charades_sta")),
    Case("annotation-missing", missing_annotation, DataError, ("{tmp}/nope.txt", "does not exist")),
    Case(
        "annotation-not-a-file", directory_annotation, DataError, ("{tmp}/train.jsonl", "not a regular file")
    ),
    Case("not-utf8", charades(b"v1 1 2##caf\xe9\n"), DataError, ("{tmp}/train.txt", "not UTF-8 text")),
    Case("charades-no-durations", no_durations, DataError, ("{tmp}/train.txt", "pass the durations file")),
    Case(
        "charades-no-separator",
        charades("v1 1 2##ok\nv1 1 2 a person sits\n"),
        DataError,
        ("{tmp}/train.txt, line 2", "no '##' separator", "expected 'VID START END##sentence'"),
    ),
    Case(
        "charades-field-count",
        charades("v1 1##a person sits\n"),
        DataError,
        ("{tmp}/train.txt, line 1", "expected 'VID START END##sentence'", "got 2 field(s) before '##'"),
    ),
    Case(
        "charades-times-not-numbers",
        charades("v1 one 2##a person sits\n"),
        DataError,
        ("{tmp}/train.txt, line 1", "start/end must be numbers (seconds)", "'one'"),
    ),
    Case(
        "charades-empty-sentence",
        charades("v1 1 2##   \n"),
        DataError,
        ("{tmp}/train.txt, line 1", "empty sentence after '##'"),
    ),
    Case(
        "charades-unknown-video",
        charades("v9 1 2##a person sits\n"),
        DataError,
        ("{tmp}/train.txt, line 1", "video 'v9' is not in the durations", "{tmp}/durations.json"),
    ),
    Case(
        "durations-not-an-object",
        charades("v1 1 2##a\n", "[30.0]"),
        DataError,
        ("{tmp}/durations.json", "expected a JSON object {video_id: seconds}, got a list"),
    ),
    Case(
        "durations-missing-key",
        charades("v1 1 2##a\n", '{"v1": {"length": 3}}'),
        DataError,
        ("{tmp}/durations.json", "video 'v1': missing key 'duration'"),
    ),
    Case(
        "durations-files-disagree",
        lambda tmp: (
            lambda: read_annotations(
                write(tmp / "train.txt", "v1 1 2##a\n"),
                "charades_sta",
                [write(tmp / "a.json", DUR), write(tmp / "b.json", '{"v1": 31.0}')],
            )
        ),
        DataError,
        ("{tmp}/b.json", "video 'v1': duration 31 s, but {tmp}/a.json gives 30 s"),
    ),
    Case(
        "durations-zero",
        charades("v1 1 2##a\n", '{"v1": 0}'),
        DataError,
        ("{tmp}/durations.json", "video 'v1': duration must be a positive finite number, got 0"),
    ),
    Case(
        "durations-nan",
        charades("v1 1 2##a\n", '{"v1": NaN}'),
        DataError,
        ("{tmp}/durations.json", "must be a positive finite number, got nan"),
    ),
    Case(
        "durations-huge-integer",
        charades("v1 1 2##a\n", '{"v1": 1' + "0" * 400 + "}"),
        DataError,
        ("{tmp}/durations.json", "must be a positive finite number", "(401 characters)"),
    ),
    Case(
        "csv-columns",
        charades("v1 1 2##a\n", "video,seconds\nv1,3\n", "Charades_v1_train.csv"),
        DataError,
        ("{tmp}/Charades_v1_train.csv, line 1", "expected a Charades CSV with columns 'id' and 'length'"),
    ),
    Case(
        "csv-empty-id",
        charades("v1 1 2##a\n", "id,length\n,3\n", "Charades_v1_train.csv"),
        DataError,
        ("{tmp}/Charades_v1_train.csv, line 2", "empty 'id'"),
    ),
    Case(
        "csv-length-not-a-number",
        charades("v1 1 2##a\n", "id,length\nv1,long\n", "Charades_v1_train.csv"),
        DataError,
        ("{tmp}/Charades_v1_train.csv, line 2", "'length' must be a number, got 'long'"),
    ),
    Case(
        "csv-duplicate-id",
        charades("v1 1 2##a\n", "id,length\nv1,3\nv1,4\n", "Charades_v1_train.csv"),
        DataError,
        ("{tmp}/Charades_v1_train.csv, line 3", "duplicate id 'v1' (also on line 2)"),
    ),
    Case(
        "csv-malformed",
        charades("v1 1 2##a\n", "id,length\nv1," + "7" * 200_000 + "\n", "Charades_v1_train.csv"),
        DataError,
        ("{tmp}/Charades_v1_train.csv", "malformed CSV", "field larger than field limit"),
    ),
    Case(
        "json-syntax",
        annotations("activitynet", '{"v1": {"duration": 3,}}'),
        DataError,
        ("{tmp}/train.json, line 1", "invalid JSON", "expected a JSON object {video_id:"),
    ),
    Case(
        "json-nested-too-deeply",
        annotations("activitynet", "[" * 100_000 + "]" * 100_000),
        DataError,
        ("{tmp}/train.json", "invalid JSON (arrays/objects nested too deeply)"),
    ),
    Case(
        "json-integer-too-long",
        annotations("activitynet", '{"v1": {"duration": 1' + "0" * 5000 + "}}"),
        DataError,
        ("{tmp}/train.json", "invalid JSON (Exceeds the limit (4300 digits) for integer string conversion)"),
    ),
    Case(
        "json-duplicate-key",
        annotations("activitynet", '{"v1": {"duration": 3}, "v1": {"duration": 4}}'),
        DataError,
        ("{tmp}/train.json", "duplicate key 'v1' in a JSON object"),
    ),
    Case(
        "video-keyed-not-an-object",
        annotations("activitynet", "[1, 2]"),
        DataError,
        ("{tmp}/train.json", "expected a JSON object keyed by video id, got a list"),
    ),
    Case(
        "video-record-not-an-object",
        anet([1, 2]),
        DataError,
        (
            "{tmp}/train.json",
            "video 'v1': expected an object with keys ['duration', 'timestamps', 'sentences']",
        ),
    ),
    Case(
        "video-record-missing-key",
        anet({"duration": 3, "sentences": []}),
        DataError,
        ("{tmp}/train.json", "video 'v1': missing key 'timestamps'"),
    ),
    Case(
        "timestamps-not-a-list",
        anet({"duration": 3, "timestamps": 5, "sentences": []}),
        DataError,
        ("{tmp}/train.json", "video 'v1': 'timestamps' must be a list, got int"),
    ),
    Case(
        "sentences-not-a-list",
        anet({"duration": 3, "timestamps": [], "sentences": "a"}),
        DataError,
        ("{tmp}/train.json", "video 'v1': 'sentences' must be a list, got a string"),
    ),
    Case(
        "timestamps-sentences-count",
        anet({"duration": 3, "timestamps": [[0, 1]], "sentences": []}),
        DataError,
        ("{tmp}/train.json", "video 'v1': 1 timestamps but 0 sentences (must be equal)"),
    ),
    Case(
        "timestamp-not-a-pair",
        anet({"duration": 3, "timestamps": [[0, "1"]], "sentences": ["a"]}),
        DataError,
        ("{tmp}/train.json", "video 'v1': timestamps[0] must be [start, end] (two numbers), got [0, '1']"),
    ),
    Case(
        "sentence-not-a-string",
        anet({"duration": 3, "timestamps": [[0, 1]], "sentences": [None]}),
        DataError,
        ("{tmp}/train.json", "video 'v1': sentences[0] must be a string, got null"),
    ),
    Case(
        "sentence-empty",
        anet({"duration": 3, "timestamps": [[0, 1]], "sentences": [" "]}),
        DataError,
        ("{tmp}/train.json", "video 'v1': sentences[0] is empty"),
    ),
    Case(
        "video-duration-zero",
        anet({"duration": 0, "timestamps": [], "sentences": []}),
        DataError,
        ("{tmp}/train.json", "video 'v1': duration must be a positive finite number, got 0"),
    ),
    Case(
        "tacos-duplicate-video",
        annotations(
            "tacos",
            json.dumps(
                {
                    k: {"fps": 30, "num_frames": 90, "timestamps": [], "sentences": []}
                    for k in ("s1", "s1.avi")
                }
            ),
        ),
        DataError,
        ("{tmp}/train.json", "videos 's1' and 's1.avi' both have video id 's1'"),
    ),
    Case(
        "tacos-fps-zero",
        annotations(
            "tacos", json.dumps({"s1.avi": {"fps": 0, "num_frames": 9, "timestamps": [], "sentences": []}})
        ),
        DataError,
        ("{tmp}/train.json", "video 's1.avi': fps must be a positive finite number, got 0"),
    ),
    Case(
        "tacos-duration-overflow",
        annotations(
            "tacos",
            json.dumps({"s1.avi": {"fps": 1e-300, "num_frames": 1e300, "timestamps": [], "sentences": []}}),
        ),
        DataError,
        (
            "{tmp}/train.json",
            "video 's1.avi': duration num_frames / fps must be a positive finite number, got inf",
        ),
    ),
    Case(
        "jsonl-syntax",
        jsonl('{"qid": 1,'),
        DataError,
        ("{tmp}/train.jsonl, line 2", "invalid JSON (Expecting property name enclosed in double quotes"),
    ),
    Case(
        "jsonl-not-an-object",
        jsonl("[1, 2]"),
        DataError,
        ("{tmp}/train.jsonl, line 2", "expected a JSON object per line, got a list"),
    ),
    Case(
        "jsonl-duplicate-key",
        jsonl('{"qid": 1, "qid": 2}'),
        DataError,
        ("{tmp}/train.jsonl, line 2", "duplicate key 'qid' in the JSON object"),
    ),
    Case(
        "jsonl-missing-key",
        jsonl(without("vid")),
        DataError,
        ("{tmp}/train.jsonl, line 2", "missing key 'vid'"),
    ),
    Case(
        "jsonl-qid-type",
        jsonl({"qid": [1]}),
        DataError,
        ("{tmp}/train.jsonl, line 2", "'qid' must be an integer or a string, got a list"),
    ),
    Case(
        "jsonl-vid-empty",
        jsonl({"vid": ""}),
        DataError,
        ("{tmp}/train.jsonl, line 2", "'vid' must be a non-empty string, got ''"),
    ),
    Case(
        "jsonl-query-type",
        jsonl({"query": 3}),
        DataError,
        ("{tmp}/train.jsonl, line 2", "'query' must be a string, got int"),
    ),
    Case(
        "jsonl-query-empty", jsonl({"query": " "}), DataError, ("{tmp}/train.jsonl, line 2", "empty 'query'")
    ),
    Case(
        "jsonl-duration-negative",
        jsonl({"duration": -1}),
        DataError,
        ("{tmp}/train.jsonl, line 2", "'duration' must be a positive finite number, got -1"),
    ),
    Case(
        "jsonl-windows-empty",
        jsonl({"relevant_windows": []}),
        DataError,
        ("{tmp}/train.jsonl, line 2", "'relevant_windows' must be a non-empty list of [start, end], got []"),
    ),
    Case(
        "jsonl-window-not-a-pair",
        jsonl({"relevant_windows": [[1, 2, 3]]}),
        DataError,
        ("{tmp}/train.jsonl, line 2", "'relevant_windows'[0] must be [start, end] (two numbers)"),
    ),
    Case(
        "jsonl-duplicate-qid",
        jsonl({"qid": 0}),
        DataError,
        ("{tmp}/train.jsonl, line 2", "duplicate qid '0' on line 1 and line 2"),
    ),
]


# Queries that are dropped (not errors): (case, annotation line, substrings of the warning)
DROP_CASES = [
    ("reversed-times", "v1 5 2##a person sits", ("{tmp}/train.txt, line 1", "dropped: start 5.0 >= end 2.0")),
    ("non-finite-time", "v1 nan 2##a person sits", ("{tmp}/train.txt, line 1", "dropped: non-finite time")),
    (
        "outside-the-video",
        "v1 40 50##a person sits",
        ("{tmp}/train.txt, line 1", "is empty after clipping to the duration [0, 30.0]"),
    ),
]


# --------------------------------------------------------------------------------------------
# Feature stores


def npy_store(
    arrays: dict[str, Any], load: str, raw: dict[str, bytes] | None = None
) -> Callable[[Path], Call]:
    def build(tmp: Path) -> Call:
        write_npy_dir(arrays, tmp / "feats")
        for name, content in (raw or {}).items():
            write(tmp / "feats" / name, content)
        store = open_feature_store(tmp / "feats")
        return lambda: store.load(load)

    return build


def h5_store(arrays: dict[str, Any], load: str) -> Callable[[Path], Call]:
    def build(tmp: Path) -> Call:
        with h5py.File(tmp / "feats.h5", "w") as f:
            for name, array in arrays.items():
                f.create_dataset(name, data=array)
        store = open_feature_store(tmp / "feats.h5")
        return lambda: store.load(load)

    return build


def npy_bytes(array: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "a.npy", array, allow_pickle=True)
        return (Path(folder) / "a.npy").read_bytes()


def truncated_h5(tmp: Path) -> Call:
    with h5py.File(tmp / "feats.h5", "w") as f:
        f.create_dataset("v1", data=np.ones((500, 8)))
    write(tmp / "feats.h5", (tmp / "feats.h5").read_bytes()[:3000])
    return lambda: open_feature_store(tmp / "feats.h5").load("v1")


def corrupt_h5_chunk(tmp: Path) -> Call:
    values = np.random.default_rng(0).random((2000, 64)).astype(np.float32)
    with h5py.File(tmp / "feats.h5", "w") as f:
        f.create_dataset("v1", data=values, chunks=(100, 64), compression="gzip")
    data = bytearray((tmp / "feats.h5").read_bytes())
    for i in range(4000, len(data) - 2000, 997):
        data[i] ^= 0xFF
    write(tmp / "feats.h5", bytes(data))
    return lambda: open_feature_store(tmp / "feats.h5").load("v1")


def empty_h5(tmp: Path) -> Call:
    with h5py.File(tmp / "feats.h5", "w") as f:
        f.create_group("nothing")
    return lambda: open_feature_store(tmp / "feats.h5").load("v1")


def empty_folder(tmp: Path) -> Call:
    (tmp / "feats").mkdir()
    return lambda: open_feature_store(tmp / "feats").load("v1")


GOOD = np.ones((3, 4), np.float32)
NAN = np.array([[0.0, np.nan, 1.0, 2.0], [np.inf, 0.0, 0.0, 0.0]])

FEATURE_CASES = [
    Case(
        "features-path-missing",
        lambda tmp: lambda: open_feature_store(tmp / "nope"),
        DataError,
        (
            "{tmp}/nope",
            "feature path does not exist",
            "a folder of {video_id}.npy files or an .h5/.hdf5 file",
        ),
    ),
    Case(
        "features-not-a-store",
        lambda tmp: lambda: open_feature_store(write(tmp / "feats.txt", "1 2 3")),
        DataError,
        ("{tmp}/feats.txt", "not a feature store", "a folder of {video_id}.npy files"),
    ),
    Case(
        "npy-folder-not-a-folder",
        lambda tmp: lambda: NpyDirStore(tmp / "nope"),
        DataError,
        ("{tmp}/nope", "not a folder", "a folder of {video_id}.npy files"),
    ),
    Case("npy-folder-empty", empty_folder, DataError, ("{tmp}/feats", "no .npy files in this folder")),
    Case(
        "video-missing",
        npy_store({"v1": GOOD}, "v2"),
        DataError,
        ("{tmp}/feats", "no features for video 'v2'", "keys look like ['v1']", "skip_missing_videos: true"),
    ),
    Case(
        "video-matches-two-keys",
        npy_store({"v1.avi": GOOD, "v1.mp4": GOOD}, "v1"),
        DataError,
        ("{tmp}/feats", "video 'v1' matches 2 keys of this store (['v1.avi', 'v1.mp4'])"),
    ),
    Case(
        "video-id-not-a-file-name",
        npy_store({"v1": GOOD}, "../v1"),
        DataError,
        ("{tmp}/feats", "video id '../v1' cannot name a file in this folder"),
    ),
    Case(
        "npy-truncated",
        npy_store({"v1": GOOD}, "v2", {"v2.npy": npy_bytes(GOOD)[:100]}),
        DataError,
        (
            "{tmp}/feats/v2.npy",
            "cannot read features of video 'v2'",
            "truncated or corrupt",
            "(T, D) numeric array",
        ),
    ),
    Case(
        "npy-empty-file",
        npy_store({"v1": GOOD}, "v2", {"v2.npy": b""}),
        DataError,
        ("{tmp}/feats/v2.npy", "cannot read features of video 'v2' (No data left in file"),
    ),
    Case(
        "npy-object-array",
        npy_store({"v1": GOOD}, "v2", {"v2.npy": npy_bytes(np.array([{"a": 1}], dtype=object))}),
        DataError,
        ("{tmp}/feats/v2.npy", "an object array, which would need pickle to load, and emtm never unpickles"),
    ),
    Case(
        "features-dtype",
        npy_store({"v1": GOOD}, "v2", {"v2.npy": npy_bytes(np.array([["1", "2"]]))}),
        DataError,
        ("{tmp}/feats/v2.npy", "video 'v2': features must be real numbers", "found dtype <U1"),
    ),
    Case(
        "features-complex",
        h5_store({"v1": GOOD.astype(np.complex64)}, "v1"),
        DataError,
        ("{tmp}/feats.h5", "video 'v1': features must be real numbers", "found dtype complex64"),
    ),
    Case(
        "features-ndim",
        npy_store({"v1": GOOD, "v2": np.ones(4)}, "v2"),
        DataError,
        ("{tmp}/feats/v2.npy", "video 'v2': expected (T, D) features, found shape (4,)"),
    ),
    Case(
        "features-empty",
        h5_store({"v1": np.ones((0, 4))}, "v1"),
        DataError,
        ("{tmp}/feats.h5", "video 'v1': empty features (shape (0, 4))", "T > 0 clips and D > 0"),
    ),
    Case(
        "features-dim",
        npy_store({"v1": GOOD, "v2": np.ones((3, 5))}, "v2"),
        DataError,
        ("{tmp}/feats/v2.npy", "video 'v2': expected shape (T, 4) like the other videos", "found (3, 5)"),
    ),
    Case(
        "features-nan-npy",
        npy_store({"v1": GOOD, "v2": NAN}, "v2"),
        DataError,
        ("{tmp}/feats/v2.npy", "video 'v2': 2 of 8 feature values are NaN or Inf", "features must be finite"),
    ),
    Case(
        "features-nan-h5",
        h5_store({"v1": GOOD, "v2": NAN}, "v2"),
        DataError,
        ("{tmp}/feats.h5", "video 'v2': 2 of 8 feature values are NaN or Inf"),
    ),
    Case(
        "features-beyond-float32",
        h5_store({"v1": np.full((2, 4), 1e39)}, "v1"),
        DataError,
        ("{tmp}/feats.h5", "video 'v1': 8 of 8 feature values are NaN or Inf (or beyond float32 range)"),
    ),
    Case(
        "h5-missing",
        lambda tmp: lambda: H5Store(tmp / "nope.h5"),
        DataError,
        ("{tmp}/nope.h5", "feature file does not exist"),
    ),
    Case(
        "h5-not-hdf5",
        lambda tmp: lambda: open_feature_store(write(tmp / "feats.h5", b"not hdf5")).load("v1"),
        DataError,
        ("{tmp}/feats.h5", "cannot open as HDF5", "one top-level dataset per video id"),
    ),
    Case(
        "h5-truncated", truncated_h5, DataError, ("{tmp}/feats.h5", "cannot open as HDF5", "truncated file")
    ),
    Case(
        "h5-corrupt-data",
        corrupt_h5_chunk,
        DataError,
        (
            "{tmp}/feats.h5",
            "cannot read the features of video 'v1'",
            "the HDF5 file may be truncated or corrupt",
        ),
    ),
    Case("h5-no-datasets", empty_h5, DataError, ("{tmp}/feats.h5", "no top-level datasets in this file")),
]


# --------------------------------------------------------------------------------------------
# data.yaml

DATA = {"format": "jsonl", "splits": {"train": "train.jsonl"}, "features": "feats"}


def data_yaml(content: str | bytes | None = None, **fields: Any) -> Callable[[Path], Call]:
    def build(tmp: Path) -> Call:
        text = content if content is not None else yaml.safe_dump({**DATA, **fields}, sort_keys=False)
        path = write(tmp / "data.yaml", text)
        return lambda: load_data_config(path)

    return build


def yaml_directory(tmp: Path) -> Call:
    (tmp / "data.yaml").mkdir()
    return lambda: load_data_config(tmp / "data.yaml")


def unknown_split(tmp: Path) -> Call:
    cfg = load_data_config(write(tmp / "data.yaml", yaml.safe_dump(DATA)))
    return lambda: cfg.split_path("val")


CONFIG_CASES = [
    Case(
        "yaml-missing",
        lambda tmp: lambda: load_data_config(tmp / "data.yaml"),
        ConfigError,
        ("{tmp}/data.yaml", "file not found"),
    ),
    Case(
        "yaml-syntax", data_yaml("format: [jsonl\n"), ConfigError, ("{tmp}/data.yaml", "not valid YAML/JSON")
    ),
    Case(
        "yaml-bad-escape",  # PyYAML raises a bare ValueError for a code point past U+10FFFF
        data_yaml('format: "\\U0011ffff"\n'),
        ConfigError,
        ("{tmp}/data.yaml", "not valid YAML/JSON", "chr() arg not in range"),
    ),
    Case(
        "yaml-not-utf8",
        data_yaml(b"format: jsonl # caf\xe9\n"),
        ConfigError,
        ("{tmp}/data.yaml", "not UTF-8 text", "save it as UTF-8"),
    ),
    Case(
        "yaml-directory", yaml_directory, ConfigError, ("{tmp}/data.yaml", "cannot read", "a YAML/JSON file")
    ),
    Case(
        "yaml-nested-too-deeply",
        data_yaml("a: " + "[" * 5000 + "]" * 5000),
        ConfigError,
        ("{tmp}/data.yaml", "nested too deeply"),
    ),
    Case(
        "yaml-not-a-mapping",
        data_yaml("- jsonl\n"),
        ConfigError,
        ("{tmp}/data.yaml", "expected a mapping of keys to values, got list"),
    ),
    Case(
        "yaml-missing-field",
        data_yaml("splits: {train: t.jsonl}\nfeatures: f\n"),
        ConfigError,
        ("{tmp}/data.yaml", "format: Field required"),
    ),
    Case(
        "yaml-wrong-value",
        data_yaml(max_video_len=0),
        ConfigError,
        ("{tmp}/data.yaml", "max_video_len: Input should be greater than or equal to 1"),
    ),
    Case(
        "yaml-unknown-format",
        data_yaml(format="charades"),
        ConfigError,
        ("{tmp}/data.yaml", "format: Input should be 'charades_sta', 'activitynet', 'tacos' or 'jsonl'"),
    ),
    Case(
        "yaml-no-splits",
        data_yaml(splits={}),
        ConfigError,
        ("{tmp}/data.yaml", "splits: Dictionary should have at least 1 item"),
    ),
    Case(
        "train-without-train-split",
        lambda tmp: (
            lambda: load_data_config(
                write(tmp / "data.yaml", yaml.safe_dump({**DATA, "splits": {"test": "t.jsonl"}}))
            ).require_split("train", "training needs one (its vocabulary and its queries)")
        ),
        ConfigError,
        ("{tmp}/data.yaml: no 'train' split, and training needs one", "it has: test"),
    ),
    Case(
        "yaml-no-features",
        lambda tmp: (
            lambda: load_data_config(
                write(tmp / "data.yaml", yaml.safe_dump({k: v for k, v in DATA.items() if k != "features"}))
            ).features_path()
        ),
        ConfigError,
        ("{tmp}/data.yaml: no `features:`, and this command reads features",),
    ),
    Case(
        "yaml-non-string-key",
        data_yaml("format: jsonl\nsplits: {train: t.jsonl}\nfeatures: f\n1: 2\n"),
        ConfigError,
        ("{tmp}/data.yaml", "1: Keys should be strings"),
    ),
    Case(
        "yaml-unknown-split",
        unknown_split,
        ConfigError,
        ("split 'val' is not in data.yaml (it has: train", "data.yaml folder: {tmp}"),
    ),
]


# --------------------------------------------------------------------------------------------
# Teacher import

IDS = ["q0", "q1", "q2"]


def mini_data(tmp: Path) -> Path:
    """Three queries on two videos, JSONL + .npy features."""
    lines = [
        {
            "qid": qid,
            "query": "a person sits",
            "vid": f"v{i % 2}",
            "duration": 10.0,
            "relevant_windows": [[1, 4]],
        }
        for i, qid in enumerate(IDS)
    ]
    write(tmp / "data" / "train.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    write_npy_dir({"v0": np.ones((5, 4)), "v1": np.ones((6, 4))}, tmp / "data" / "feats")
    return write(tmp / "data" / "data.yaml", yaml.safe_dump(DATA))


def span(**arrays: Any) -> dict[str, Any]:
    return {
        "sample_ids": np.array(IDS),
        "start_logits": np.zeros((3, 4)),
        "end_logits": np.zeros((3, 4)),
        **arrays,
    }


def maps(**arrays: Any) -> dict[str, Any]:
    return {"sample_ids": np.array(IDS), "scores": np.full((3, 4, 4), 0.5), **arrays}


def npz(fmt: str, arrays: dict[str, Any], name: str = "out.npz", **options: Any) -> Callable[[Path], Call]:
    def build(tmp: Path) -> Call:
        yaml_path, path = mini_data(tmp), tmp / name
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        return lambda: import_outputs(fmt, path, yaml_path, "train", tmp / "cache.h5", **options)

    return build


def raw_file(fmt: str, content: str | bytes, name: str) -> Callable[[Path], Call]:
    def build(tmp: Path) -> Call:
        yaml_path, path = mini_data(tmp), write(tmp / name, content)
        return lambda: import_outputs(fmt, path, yaml_path, "train", tmp / "cache.h5")

    return build


def proposals(*records: Any, fmt: str = "proposals") -> Callable[[Path], Call]:
    good = {"unit": "seconds", "windows": [[1, 4]], "scores": [1.0]}
    if fmt == "regression":
        good = {"unit": "seconds", "window": [1, 4]}
    lines = [json.dumps({"sample_id": sid, **good}) for sid in IDS[:2]]
    lines += [r if isinstance(r, str) else json.dumps({"sample_id": "q2", **good, **r}) for r in records]
    return raw_file(fmt, "\n".join(lines), "out.jsonl")


def corrupt_member(tmp: Path) -> Call:
    build = npz("span", span())(tmp)
    data = bytearray((tmp / "out.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF
    write(tmp / "out.npz", bytes(data))
    return build


def single_npy(tmp: Path) -> Call:
    yaml_path = mini_data(tmp)
    with open(tmp / "out.npz", "wb") as handle:
        np.save(handle, np.zeros(3))
    return lambda: import_outputs("span", tmp / "out.npz", yaml_path, "train", tmp / "cache.h5")


IMPORT_CASES = [
    Case(
        "import-unknown-format",
        npz("spans", span()),
        ConfigError,
        ("unknown teacher output format 'spans'", "expected one of span, 2dmap, proposals, regression"),
    ),
    Case(
        "import-bad-option",
        npz("span", span(), temperature=0),
        ConfigError,
        ("temperature must be > 0, got 0",),
    ),
    Case(
        "import-missing",
        lambda tmp: lambda: import_outputs("span", tmp / "out.npz", mini_data(tmp), "train", tmp / "c.h5"),
        DataError,
        ("{tmp}/out.npz", "teacher output file does not exist (format 'span' expects a .npz file)"),
    ),
    Case(
        "import-suffix",
        npz("proposals", span()),
        DataError,
        ("{tmp}/out.npz", "format 'proposals' expects a .jsonl file"),
    ),
    Case(
        "npz-not-a-zip",
        raw_file("span", b"PK\x03\x04 truncated", "out.npz"),
        DataError,
        ("{tmp}/out.npz", "not a readable .npz archive", "truncated or corrupt"),
    ),
    Case(
        "npz-single-array",
        single_npy,
        DataError,
        ("{tmp}/out.npz", "expected an .npz archive of named arrays"),
    ),
    Case(
        "npz-missing-array",
        npz("span", {"sample_ids": np.array(IDS)}),
        DataError,
        ("{tmp}/out.npz", "missing array(s) ['start_logits', 'end_logits']"),
    ),
    Case(
        "npz-object-array",
        npz("span", span(sample_ids=np.array(IDS, dtype=object))),
        DataError,
        (
            "{tmp}/out.npz",
            "array 'sample_ids' is an object array, which would need pickle",
            "emtm never unpickles",
        ),
    ),
    Case(
        "npz-corrupt-member",
        corrupt_member,
        DataError,
        ("{tmp}/out.npz", "cannot be read", "truncated or corrupt"),
    ),
    Case(
        "npz-ids-type",
        npz("span", span(sample_ids=np.zeros((3, 1)))),
        DataError,
        ("{tmp}/out.npz", "'sample_ids' must be a 1-D str or int array, got float64 (3, 1)"),
    ),
    Case(
        "npz-ids-not-utf8",
        npz("span", span(sample_ids=np.array([b"q0", b"\xff", b"q2"]))),
        DataError,
        ("{tmp}/out.npz", "'sample_ids' holds bytes that are not UTF-8"),
    ),
    Case(
        "npz-unknown-id",
        npz("span", span(sample_ids=np.array(["q0", "q1", "q9"]))),
        DataError,
        ("{tmp}/out.npz", "row 2: sample_id 'q9' is not in split 'train' of {tmp}/data/data.yaml"),
    ),
    Case(
        "npz-duplicate-id",
        npz("span", span(sample_ids=np.array(["q0", "q1", "q0"]))),
        DataError,
        ("{tmp}/out.npz", "row 2: sample_id 'q0' already on row 0"),
    ),
    Case(
        "span-logits-shape",
        npz("span", span(start_logits=np.zeros((2, 4)))),
        DataError,
        ("{tmp}/out.npz", "'start_logits' must be a numeric 2-D array with one row per sample_id (3)"),
    ),
    Case(
        "span-start-end-shapes",
        npz("span", span(end_logits=np.zeros((3, 5)))),
        DataError,
        ("{tmp}/out.npz", "'start_logits' (3, 4) and 'end_logits' (3, 5) differ in shape"),
    ),
    Case(
        "span-length",
        npz("span", span(lengths=np.array([4.0, np.nan, 4.0]))),
        DataError,
        ("{tmp}/out.npz", "row 1 ('q1'): length nan is not in [1, 4]"),
    ),
    Case(
        "span-nan",
        npz("span", span(start_logits=np.array([[0, np.nan, 0, 0]] * 3))),
        DataError,
        ("{tmp}/out.npz", "row 0 ('q0'): logits hold NaN or +inf"),
    ),
    Case(
        "2dmap-not-square",
        npz("2dmap", maps(scores=np.zeros((3, 4, 5)))),
        DataError,
        ("{tmp}/out.npz", "'scores' must be (S, N, N) square maps, got (3, 4, 5)"),
    ),
    Case(
        "2dmap-mask",
        npz("2dmap", maps(mask=np.ones((4, 4)))),
        DataError,
        ("{tmp}/out.npz", "'mask' must be bool (N, N) or (S, N, N) like 'scores', got float64"),
    ),
    Case(
        "2dmap-is-logits",
        npz("2dmap", maps(is_logits=np.array("yes"))),
        DataError,
        ("{tmp}/out.npz", "'is_logits' must be a bool scalar or (S,) array"),
    ),
    Case(
        "2dmap-empty-mask",
        npz("2dmap", maps(mask=np.zeros((4, 4), dtype=bool))),
        DataError,
        ("{tmp}/out.npz", "row 0 ('q0'): the mask has no valid cell"),
    ),
    Case(
        "2dmap-nan",
        npz("2dmap", maps(scores=np.full((3, 4, 4), np.nan))),
        DataError,
        ("{tmp}/out.npz", "row 0 ('q0'): scores hold NaN or +inf"),
    ),
    Case(
        "2dmap-not-probabilities",
        npz("2dmap", maps(scores=np.full((3, 4, 4), 3.0))),
        DataError,
        ("{tmp}/out.npz", "row 0 ('q0'): scores outside [0, 1]; add is_logits=True if these are logits"),
    ),
    Case(
        "import-samples-missing",
        npz(
            "span",
            span(
                sample_ids=np.array(["q0", "q1", "q0"])[:2],
                start_logits=np.zeros((2, 4)),
                end_logits=np.zeros((2, 4)),
            ),
        ),
        DataError,
        ("{tmp}/out.npz", "1 of 3 samples of split 'train'", "are not in this file", "allow_missing=True"),
    ),
    Case(
        "jsonl-outputs-not-utf8",
        raw_file("regression", b"\xff\n", "out.jsonl"),
        DataError,
        ("{tmp}/out.jsonl", "not UTF-8 text"),
    ),
    Case(
        "jsonl-outputs-syntax",
        proposals('{"sample_id": '),
        DataError,
        ("{tmp}/out.jsonl, line 3", "invalid JSON (Expecting value"),
    ),
    Case(
        "jsonl-outputs-not-an-object",
        proposals("[]"),
        DataError,
        ("{tmp}/out.jsonl, line 3", "expected a JSON object per line"),
    ),
    Case(
        "jsonl-outputs-missing-key",
        proposals('{"sample_id": "q2", "windows": [[1, 2]]}'),
        DataError,
        ("{tmp}/out.jsonl, line 3", "missing key 'unit'"),
    ),
    Case(
        "jsonl-outputs-id-type",
        proposals({"sample_id": 1.5}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "'sample_id' must be a string or an integer, got 1.5"),
    ),
    Case(
        "jsonl-outputs-unknown-id",
        proposals({"sample_id": "q9"}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "sample_id 'q9' is not in split 'train'"),
    ),
    Case(
        "jsonl-outputs-duplicate-id",
        proposals({"sample_id": "q0"}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "sample_id 'q0' already on line 1"),
    ),
    Case(
        "jsonl-outputs-unit",
        proposals({"unit": "frames"}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "'unit' must be one of ('seconds', 'fraction'), got 'frames'"),
    ),
    Case(
        "proposals-windows",
        proposals({"windows": []}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "'windows' must be a non-empty list of [start, end], got []"),
    ),
    Case(
        "proposals-scores-count",
        proposals({"scores": [1, 2]}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "'scores' must be a list of 1 numbers, one per window"),
    ),
    Case(
        "proposals-no-scores",
        proposals('{"sample_id": "q2", "unit": "seconds", "windows": [[1, 2]]}'),
        DataError,
        ("{tmp}/out.jsonl, line 3", "missing 'scores' (or give windows as [start, end, score])"),
    ),
    Case(
        "proposals-negative-score",
        proposals({"scores": [-1]}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "'scores' must be finite numbers >= 0, got [-1]"),
    ),
    Case(
        "proposals-window-values",
        proposals({"windows": [[1, "NaN"]]}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "windows[0] must be [start, end] (two finite numbers)"),
    ),
    Case(
        "proposals-reversed-window",
        proposals({"windows": [[5, 1]]}),
        DataError,
        ("{tmp}/out.jsonl, line 3", "windows[0] [5, 1] starts after it ends"),
    ),
    Case(
        "regression-window",
        proposals({"window": [1, 10**400]}, fmt="regression"),
        DataError,
        ("{tmp}/out.jsonl, line 3", "'window' must be [start, end] (two finite numbers)", "(406 characters)"),
    ),
]


# --------------------------------------------------------------------------------------------
# Run directories (load_run)

SPEC = SpecInfo(video_dim=8, max_video_len=16, vocab_size=4, word_dim=6, n_chars=4)
OPTIONS = {"d": 16, "n_heads": 2}


def mini_run(tmp: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    model = build_model("student", model_config("student", OPTIONS), SPEC.to_spec())
    save_weights(model, run / "model.safetensors")
    write_run_config(run, TrainConfig(data="data.yaml", model="student", model_options=OPTIONS), SPEC)
    Vocab([PAD, UNK, "a", "b"], [PAD, UNK, "a", "b"]).save(run / "vocab.json")
    return run


def run_with(file: str, edit: Callable[[Any], Any] | bytes | None) -> Callable[[Path], Call]:
    """A run whose `file` is replaced (bytes), edited as JSON (a function of it) or deleted (None)."""

    def build(tmp: Path) -> Call:
        run = mini_run(tmp)
        if edit is None:
            (run / file).unlink()
        elif isinstance(edit, bytes):
            write(run / file, edit)
        else:
            obj = json.loads((run / file).read_text())
            write(run / file, json.dumps(edit(obj)))
        return lambda: load_run(run)

    return build


def setting(*keys: str, value: Any) -> Callable[[Any], Any]:
    def edit(obj: Any) -> Any:
        node = obj
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        return obj

    return edit


def nan_weights(tmp: Path) -> Call:
    from safetensors.torch import load_file, save_file

    run = mini_run(tmp)
    tensors = load_file(str(run / "model.safetensors"))
    tensors["encoder.video_proj.1.weight"][0, 0] = float("inf")
    save_file(tensors, str(run / "model.safetensors"))
    return lambda: load_run(run)


def other_weights(tmp: Path) -> Call:
    run = mini_run(tmp)
    model = build_model("meanpool", model_config("meanpool", {}), SPEC.to_spec())
    save_weights(model, run / "model.safetensors")
    return lambda: load_run(run)


def truncated_weights(tmp: Path) -> Call:
    run = mini_run(tmp)
    write(run / "model.safetensors", (run / "model.safetensors").read_bytes()[:-100])
    return lambda: load_run(run)


def pickled_weights(tmp: Path) -> Call:
    run = mini_run(tmp)
    torch.save({"w": torch.ones(2)}, run / "model.safetensors")
    return lambda: load_run(run)


RUN_CASES = [
    Case(
        "run-no-config",
        run_with("config.json", None),
        EmtmError,
        ("{tmp}/run", "no config.json here; pass the folder that `emtm train --out` wrote"),
    ),
    Case(
        "run-config-not-json",
        run_with("config.json", b'{"format_version": 1,'),
        EmtmError,
        ("{tmp}/run/config.json", "not readable JSON", "expected the run's config object"),
    ),
    Case(
        "run-config-not-object",
        run_with("config.json", b"[1]"),
        EmtmError,
        ("{tmp}/run/config.json", "expected a JSON object with 'train' and 'spec', got list"),
    ),
    Case(
        "run-format-version",
        run_with("config.json", setting("format_version", value=2)),
        EmtmError,
        ("{tmp}/run/config.json", "format_version 2, expected 1"),
    ),
    Case(
        "run-config-section",
        run_with("config.json", lambda c: {k: v for k, v in c.items() if k != "spec"}),
        EmtmError,
        ("{tmp}/run/config.json", "missing or malformed section", "expected 'train' and 'spec'"),
    ),
    Case(
        "run-train-config",
        run_with("config.json", setting("train", "optim", "lr", value=-1)),
        ConfigError,
        ("{tmp}/run/config.json", "optim.lr: Input should be greater than 0"),
    ),
    Case(
        "run-spec-sizes",
        run_with("config.json", setting("spec", "video_dim", value="8")),
        EmtmError,
        ("{tmp}/run/config.json", "'spec' sizes must be positive integers, got {'video_dim': '8'}"),
    ),
    Case(
        "run-unknown-model",
        run_with("config.json", setting("train", "model", value="nope")),
        ConfigError,
        ("{tmp}/run/config.json", "unknown model 'nope'; choose one of"),
    ),
    Case(
        "run-unbuildable-model",
        run_with("config.json", setting("train", "model_options", "d", value=-1)),
        EmtmError,
        ("{tmp}/run/config.json", "cannot build model 'student' from 'train.model_options'"),
    ),
    Case(
        "run-vocab-mismatch",
        run_with("vocab.json", setting("words", value=[PAD, UNK, "a"])),
        EmtmError,
        (
            "{tmp}/run/vocab.json",
            "3 words and 4 characters, but the spec in {tmp}/run/config.json says 4 and 4",
        ),
    ),
    Case(
        "run-vocab-missing",
        run_with("vocab.json", None),
        DataError,
        ("{tmp}/run/vocab.json", "vocabulary file not found"),
    ),
    Case(
        "run-vocab-not-json",
        run_with("vocab.json", b"[" * 100_000),
        DataError,
        (
            "{tmp}/run/vocab.json",
            "invalid JSON (arrays/objects nested too deeply); expected a vocabulary object",
        ),
    ),
    Case(
        "run-vocab-version",
        run_with("vocab.json", setting("version", value=9)),
        DataError,
        ("{tmp}/run/vocab.json", "unsupported vocabulary version 9 (expected 1)"),
    ),
    Case(
        "run-vocab-words",
        run_with("vocab.json", setting("words", value=["a", "b"])),
        DataError,
        ("{tmp}/run/vocab.json", "\"words\" must start with '<pad>', '<unk>'"),
    ),
    Case(
        "run-weights-missing",
        run_with("model.safetensors", None),
        EmtmError,
        ("{tmp}/run/model.safetensors", "weights not found"),
    ),
    Case(
        "run-weights-truncated",
        truncated_weights,
        EmtmError,
        ("{tmp}/run/model.safetensors", "not a readable safetensors file", "truncated or corrupt"),
    ),
    Case(
        "run-weights-pickle",
        pickled_weights,
        EmtmError,
        ("{tmp}/run/model.safetensors", "not a readable safetensors file"),
    ),
    Case(
        "run-weights-nan",
        nan_weights,
        EmtmError,
        (
            "{tmp}/run/model.safetensors",
            "1 weight tensor(s) hold NaN or Inf values",
            "encoder.video_proj.1.weight",
        ),
    ),
    Case(
        "run-weights-shape",
        run_with("config.json", setting("spec", "video_dim", value=9)),
        EmtmError,
        ("{tmp}/run/model.safetensors", "weights do not fit the model in config.json", "size mismatch"),
    ),
    Case(
        "run-weights-other-model",
        other_weights,
        EmtmError,
        ("{tmp}/run/model.safetensors", "weights do not match the model in config.json (missing"),
    ),
]


def trained_run_dir(tmp: Path) -> Call:
    from emtm.engine.run_files import check_run_dir

    write(tmp / "run" / "model.safetensors", b"weights")
    write(tmp / "run" / "metrics.json", "{}")
    return lambda: check_run_dir(tmp / "run", resume=False, overwrite=False)


def resumed_with_other_flags(tmp: Path) -> Call:
    from emtm.cli import build_parser, run_config

    run = tmp / "run"
    write(
        run / "config.json",
        json.dumps({"train": TrainConfig(data=str(tmp / "data.yaml")).model_dump(mode="json")}),
    )
    argv = ["train", "--data", str(tmp / "data.yaml"), "--out", str(run), "--resume", "--epochs", "3"]
    args = build_parser().parse_args(argv)
    return lambda: run_config(args)


def empty_split(tmp: Path) -> Call:
    from emtm.data.dataset import prepare

    write(tmp / "train.txt", "")
    write(tmp / "d.json", DUR)
    (tmp / "feats").mkdir()
    np.save(tmp / "feats" / "v1.npy", np.ones((4, 3), dtype=np.float32))
    cfg = DataConfig(format="charades_sta", splits={"train": str(tmp / "train.txt")},
                     durations=str(tmp / "d.json"), features=str(tmp / "feats"))  # fmt: skip
    return lambda: prepare(cfg, 0, ("train",))


def huge_features(tmp: Path) -> Call:
    (tmp / "feats").mkdir()
    np.save(tmp / "feats" / "v1.npy", np.full((4, 3), 1e38, dtype=np.float32))
    return lambda: open_feature_store(tmp / "feats").load("v1")


def nan_json(tmp: Path) -> Call:
    from emtm.io import write_json

    return lambda: write_json(tmp / "m.json", {"r1@0.5": float("nan")})


def unwritable_out(tmp: Path) -> Call:
    from emtm.io import check_writable

    write(tmp / "file", "a file, not a folder")
    return lambda: check_writable(tmp / "file" / "run", "--out")


def one_split_benchmark(tmp: Path) -> Call:
    import dataclasses

    from emtm.data import synth

    cfg = dataclasses.replace(synth.PRESETS["tiny"], n_test_videos=0)
    return lambda: synth.generate(cfg, tmp / "bench", progress=False)


WORK_CASES = [
    Case("split-empty", empty_split, DataError, ("split 'train' (", "is empty: the file holds no query")),
    Case(
        "features-huge", huge_features, DataError, ("{tmp}/feats/v1.npy", "beyond +/-10000 (largest 1e+38)")
    ),
    Case("json-nan", nan_json, EmtmError, ("{tmp}/m.json: not written, r1@0.5 is nan",)),
    Case("out-unwritable", unwritable_out, EmtmError, ("--out {tmp}/file/run: cannot write there",)),
    Case(
        "synth-one-split", one_split_benchmark, ConfigError, ("n_test_videos (0) must each be", "needs both")
    ),
    Case(
        "train-over-finished-run",
        trained_run_dir,
        EmtmError,
        ("{tmp}/run already holds a finished run (model.safetensors)", "--resume", "--overwrite"),
    ),
    Case(
        "resume-with-other-flags",
        resumed_with_other_flags,
        EmtmError,
        ("{tmp}/run", "optim.epochs: saved 30, given 3", "Drop them to resume"),
    ),
]

CASES = ANNOTATION_CASES + FEATURE_CASES + CONFIG_CASES + IMPORT_CASES + RUN_CASES + WORK_CASES


def run_case(case: Case, tmp: Path) -> EmtmError:
    """Build the case in `tmp`, call it, and return the error it raised (failing if it raised none)."""
    call = case.build(tmp)
    with pytest.raises(EmtmError) as info:
        call()
    return info.value


def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES] + [name for name, _, _ in DROP_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_error_catalogue(case: Case, tmp_path: Path) -> None:
    error = run_case(case, tmp_path)
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    message = str(error)
    for expected in case.expect:
        assert expected.replace("{tmp}", str(tmp_path)) in message, f"{expected!r} not in: {message}"
    assert len(message) < 1000


@pytest.mark.parametrize("case", DROP_CASES, ids=lambda case: case[0])
def test_dropped_queries_are_warned_about(case: tuple[str, str, tuple[str, ...]], tmp_path: Path) -> None:
    _, line, expected = case
    samples, report = charades(f"{line}\nv1 1 2##a person sits\n")(tmp_path)()
    assert (len(samples), report.n_read, report.n_dropped) == (1, 2, 1) and len(report.warnings) == 1
    for part in expected:
        assert part.replace("{tmp}", str(tmp_path)) in report.warnings[0]


def test_docs_show_every_case() -> None:
    docs = (REPO / "docs" / "ERRORS.md").read_text(encoding="utf-8")
    missing = [case.name for case in CASES if f"`{case.name}`" not in docs]
    missing += [name for name, _, _ in DROP_CASES if f"`{name}`" not in docs]
    assert not missing, f"docs/ERRORS.md lacks {missing}; regenerate with `python {Path(__file__).name}`"


def _markdown() -> str:
    """The catalogue with real messages, the case folder shown as DIR (for docs/ERRORS.md)."""
    rows = ["| case | error | message |", "|---|---|---|"]
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            error = run_case(case, tmp)
            message = " ".join(str(error).replace(str(tmp), "DIR").replace("|", "\\|").split())
        rows.append(f"| `{case.name}` | {type(error).__name__} | {message} |")
    rows += ["", "| case | line | warning (the query is dropped) |", "|---|---|---|"]
    for name, line, _ in DROP_CASES:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            _, report = charades(f"{line}\nv1 1 2##a person sits\n")(tmp)()
            rows.append(f"| `{name}` | `{line}` | {report.warnings[0].replace(str(tmp), 'DIR')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(_markdown())
