"""Tests for emtm.data.annotations: the real annotation files, round trips, and bad input."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from emtm.data.annotations import (
    FORMATS,
    annotation_hash,
    load_durations,
    read_annotations,
    write_charades_sta,
    write_durations,
    write_jsonl,
)
from emtm.data.records import Sample
from emtm.errors import DataError

ANNOTATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "annotations"


def _real(*parts: str) -> Path:
    path = ANNOTATIONS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real annotations not available at {path}")
    return path


def _check_samples(samples: list[Sample]) -> None:
    ids = [s.sample_id for s in samples]
    assert len(set(ids)) == len(ids)
    for s in samples:
        assert 0.0 <= s.start < s.end <= s.duration, s
        assert s.sentence and s.sentence == s.sentence.strip()


# --------------------------------------------------------------------------------------------
# Real data


@pytest.fixture(scope="module")
def charades_durations() -> dict[str, float]:
    return load_durations(_real("charades_sta", "charades_durations.json"))


def test_charades_sta_train(charades_durations, caplog):
    path = _real("charades_sta", "charades_sta_train.txt")
    with caplog.at_level(logging.WARNING, logger="emtm.data"):
        samples, report = read_annotations(path, "charades_sta", charades_durations)
    assert (report.n_read, report.n_kept, report.n_dropped, report.n_clipped) == (12408, 12404, 4, 1802)
    assert len(samples) == 12404
    _check_samples(samples)
    # The 4 known lines with start >= end (LEOL6, IOL8Q, AKKWU x2).
    assert len(report.warnings) == 4
    for line, vid_values in [
        (8252, "8.0 >= end 7.0"),
        (8440, "20.9 >= end 12.0"),
        (9623, "38.0"),
        (9624, "38.0"),
    ]:
        assert any(f"{path}, line {line}:" in w and vid_values in w for w in report.warnings), line
    assert len([r for r in caplog.records if r.name == "emtm.data" and r.levelno == logging.WARNING]) == 4
    # Ids count dropped queries too: AKKWU's kept queries keep their original index.
    assert samples[0].sample_id == "AO8RW_0"
    assert not any(s.video_id == "LEOL6" and s.start == 8.0 for s in samples)


def test_charades_sta_test(charades_durations):
    path = _real("charades_sta", "charades_sta_test.txt")
    samples, report = read_annotations(
        path, "charades_sta", durations=_real("charades_sta", "charades_durations.json")
    )
    # 562 end after the duration with a strict `end > duration`; one (HVFXT, line 2750: 32.8 vs 32.79)
    # is over by exactly 0.01, which is why SOURCE.md's tolerance-based count says 561.
    assert (report.n_read, report.n_kept, report.n_dropped, report.n_clipped) == (3720, 3720, 0, 562)
    _check_samples(samples)
    assert all(s.end <= s.duration for s in samples)
    assert all(s.duration == charades_durations[s.video_id] for s in samples)
    hvfxt = [s for s in samples if s.video_id == "HVFXT" and s.sentence == "person closes the door."]
    assert hvfxt and hvfxt[0].end == 32.79


@pytest.mark.parametrize("split, n", [("train", 9790), ("val", 4436), ("test", 4001)])
def test_tacos(split, n):
    samples, report = read_annotations(_real("tacos", f"{split}.json"), "tacos")
    clipped = {"train": 43, "val": 0, "test": 5}[split]
    assert (report.n_read, report.n_kept, report.n_dropped, report.n_clipped) == (n, n, 0, clipped)
    _check_samples(samples)
    assert not any(s.video_id.endswith(".avi") for s in samples)
    raw = json.loads(_real("tacos", f"{split}.json").read_text())
    first_key = next(iter(raw))
    rec = raw[first_key]
    s0 = samples[0]
    assert s0.sample_id == first_key.removesuffix(".avi") + "_0"
    assert math.isclose(s0.duration, rec["num_frames"] / rec["fps"])
    assert math.isclose(s0.start, rec["timestamps"][0][0] / rec["fps"])


@pytest.mark.parametrize(
    "split, n, dropped, clipped", [("train", 37421, 4, 261), ("val", 17505, 0, 134), ("test", 17031, 0, 111)]
)
def test_activitynet(split, n, dropped, clipped):
    path = _real("activitynet_captions", f"{split}.json")
    samples, report = read_annotations(path, "activitynet")
    assert report.n_read == n
    assert (report.n_dropped, report.n_clipped) == (dropped, clipped)
    assert report.n_kept == len(samples) == n - dropped
    assert report.n_kept + report.n_dropped == report.n_read
    _check_samples(samples)
    assert not any(s.sentence.startswith(" ") for s in samples)
    if split == "train":
        # Two zero-length and two reversed moments.
        for where in [
            "'v_N7ppHQNikv8', timestamps[2]",
            "'v_4rKTw99bM8g', timestamps[1]",
            "'v_0bosp4-pyTM', timestamps[3]",
            "'v_rhOtqArO-3Y', timestamps[5]",
        ]:
            assert any(f"{path}, video {where}" in w for w in report.warnings), where


def test_annotation_hash_real():
    path = _real("charades_sta", "charades_sta_test.txt")
    assert annotation_hash(path) == "fab341679c20b0917173dcffffde367a71113fe63f3a645558cef2ebfbfefb55"


# --------------------------------------------------------------------------------------------
# Round trips


SAMPLES = [
    Sample("AAA_0", "AAA", 30.5, 0.0, 6.9, "a person opens a door."),
    Sample("AAA_1", "AAA", 30.5, 12.346, 30.5, "person sits ## down."),
    Sample("BBB_0", "BBB", 12.17, 3.4, 8.8, "person laughs."),
    Sample("AAA_2", "AAA", 30.5, 1.0, 2.0, "héllo wörld"),
]


def test_charades_round_trip(tmp_path):
    txt, dur = tmp_path / "sub" / "a.txt", tmp_path / "durations.json"
    write_charades_sta(SAMPLES, txt)
    write_durations({"AAA": 30.5, "BBB": 12.17}, dur)
    assert txt.read_text(encoding="utf-8").splitlines()[1] == "AAA 12.35 30.50##person sits ## down."
    samples, report = read_annotations(txt, "charades_sta", dur)
    assert (report.n_read, report.n_kept, report.n_clipped, report.n_dropped) == (4, 4, 0, 0)
    expected = [
        Sample(s.sample_id, s.video_id, s.duration, round(s.start, 2), round(s.end, 2), s.sentence)
        for s in SAMPLES
    ]
    assert samples == expected
    assert json.loads(dur.read_text()) == {"AAA": 30.5, "BBB": 12.17}
    assert list(tmp_path.rglob(".*.tmp")) == []


def test_charades_round_trip_real(tmp_path, charades_durations):
    samples, _ = read_annotations(
        _real("charades_sta", "charades_sta_test.txt"), "charades_sta", charades_durations
    )
    write_charades_sta(samples, tmp_path / "t.txt")
    write_durations(charades_durations, tmp_path / "d.json")
    again, report = read_annotations(tmp_path / "t.txt", "charades_sta", tmp_path / "d.json")
    assert report.n_clipped == 0 and again == samples


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(SAMPLES, path)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {
        "qid": "AAA_0",
        "query": "a person opens a door.",
        "vid": "AAA",
        "duration": 30.5,
        "relevant_windows": [[0.0, 6.9]],
    }
    samples, report = read_annotations(path, "jsonl")
    assert samples == SAMPLES
    assert (report.n_read, report.n_kept) == (4, 4)


def test_jsonl_lighthouse_layout(tmp_path):
    path = tmp_path / "qv.jsonl"
    lines = [
        {
            "qid": 9769,
            "query": "some military patriots",
            "duration": 150,
            "vid": "j7rJstUseKg_360.0_510.0",
            "relevant_windows": [[72, 82], [90, 160]],
            "relevant_clip_ids": [36, 37],
        },
        {"qid": 7, "query": " a man ", "duration": 10.0, "vid": "v", "relevant_windows": [[-1, 12]]},
        {"qid": "x", "query": "q", "duration": 10.0, "vid": "v", "relevant_windows": [[5, 5]]},
    ]
    path.write_text("\n".join(json.dumps(d) for d in lines) + "\n\n", encoding="utf-8")
    samples, report = read_annotations(path, "jsonl")
    vid = "j7rJstUseKg_360.0_510.0"  # every window is kept (clipped); the first is the moment
    assert samples == [
        Sample("9769", vid, 150.0, 72.0, 82.0, "some military patriots", ((72.0, 82.0), (90.0, 150.0))),
        Sample("7", "v", 10.0, 0.0, 10.0, "a man"),
    ]
    assert samples[1].windows == ((0.0, 10.0),)
    assert [s.ends_clipped for s in samples] == [1, 1] and report.n_ends_clipped == 2
    assert (report.n_read, report.n_kept, report.n_clipped, report.n_dropped) == (3, 2, 2, 1)
    assert f"{path}, line 3:" in report.warnings[0] and "5.0 >= end 5.0" in report.warnings[0]


# --------------------------------------------------------------------------------------------
# Clip / drop policy


def test_clip_and_drop_policy(tmp_path, caplog):
    txt = tmp_path / "c.txt"
    txt.write_text(
        "V 1.0 12.0##end past duration\n"  # clipped to 10
        "V -2.0 3.0##negative start\n"  # clipped to 0
        "V 11.0 15.0##starts past duration\n"  # dropped: [10, 10] is empty
        "V 5.0 5.0##zero length\n"  # dropped
        "V nan 5.0##not finite\n"  # dropped
        "V 1.0 inf##infinite\n"  # dropped
        "\n"
        "V 2.0 3.0##fine\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="emtm.data"):
        samples, report = read_annotations(txt, "charades_sta", {"V": 10.0})
    assert [(s.sample_id, s.start, s.end) for s in samples] == [
        ("V_0", 1.0, 10.0),
        ("V_1", 0.0, 3.0),
        ("V_6", 2.0, 3.0),
    ]
    assert (report.n_read, report.n_kept, report.n_clipped, report.n_dropped) == (7, 3, 2, 4)
    for line in (3, 4, 5, 6):
        assert any(w.startswith(f"{txt}, line {line}: dropped") for w in report.warnings), line
    assert "11.0" in report.warnings[0] and "15.0" in report.warnings[0]
    assert "nan" in report.warnings[2]
    assert [r.getMessage() for r in caplog.records if r.name == "emtm.data"] == report.warnings


def test_tacos_frames_to_seconds(tmp_path):
    path = tmp_path / "tacos.json"
    path.write_text(
        json.dumps(
            {
                "s1-d1.avi": {
                    "timestamps": [[0, 50], [90, 120]],
                    "sentences": ["a", " b "],
                    "fps": 10.0,
                    "num_frames": 100,
                }
            }
        )
    )
    samples, report = read_annotations(path, "tacos")
    assert samples == [
        Sample("s1-d1_0", "s1-d1", 10.0, 0.0, 5.0, "a"),
        Sample("s1-d1_1", "s1-d1", 10.0, 9.0, 10.0, "b"),
    ]
    assert report.n_clipped == 1


# --------------------------------------------------------------------------------------------
# load_durations


def test_load_durations_layouts(tmp_path):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"A": 30.5, "B": 12}))
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"A": {"subset": "train", "duration": 30.5}, "B": {"duration": 12}}))
    csv_path = tmp_path / "Charades_v1_test.csv"
    csv_path.write_text(
        "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
        'A,S1,Kitchen,6,7,Yes,"A person cooks.\nThen eats.",food;plate,"desc",c001 1.0 5.0,30.5\n'
        "B,S2,Garage,5,7,Yes,script,box,desc,,12\n",
        encoding="utf-8",
    )
    for path in (flat, nested, csv_path):
        assert load_durations(path) == {"A": 30.5, "B": 12.0}, path


def test_load_durations_real(charades_durations):
    assert len(charades_durations) == 6672
    assert charades_durations["004QE"] == 30.58


@pytest.mark.parametrize(
    "name, text, needle, line",
    [
        ("d.json", '{"A": 1.0,', "invalid JSON", 1),
        ("d.json", "[1, 2]", "expected a JSON object", None),
        ("d.json", '{"A": "12"}', "video 'A': duration must be a positive finite number", None),
        ("d.json", '{"A": -1}', "video 'A': duration", None),
        ("d.json", '{"A": {"subset": "train"}}', "video 'A': missing key 'duration'", None),
        ("d.json", '{"A": 1, "A": 2}', "duplicate key 'A'", None),
        ("d.csv", "id,len\nA,1\n", "columns 'id' and 'length'", 1),
        ("d.csv", "id,length\nA,1\nB,abc\n", "video 'B': 'length' must be a number", 3),
        ("d.csv", "id,length\nA,1\nA,2\n", "duplicate id 'A'", 3),
        ("d.csv", "id,length\nA,0\n", "video 'A': 'length' must be a positive", 2),
    ],
)
def test_load_durations_errors(tmp_path, name, text, needle, line):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_durations(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line {line}: " if line else f"{path}: "), message
    assert needle in message


# --------------------------------------------------------------------------------------------
# Malformed input


def _raises(path: Path, fmt: str, *needles: str, durations=None) -> str:
    with pytest.raises(DataError) as info:
        read_annotations(path, fmt, durations)
    message = str(info.value)
    assert path.name in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


@pytest.mark.parametrize(
    "text, line, needle",
    [
        ("V 1 2##ok\nV 1 2 no separator\n", 2, "no '##' separator"),
        ("V 1 2##ok\n\nV 1##short\n", 3, "got 2 field(s)"),
        ("V 1 2 3##long\n", 1, "got 4 field(s)"),
        ("V one 2##x\n", 1, "start/end must be numbers"),
        ("V 1 2##   \n", 1, "empty sentence"),
        ("V 1 2##x\nW 1 2##y\n", 2, "video 'W' is not in the durations"),
    ],
)
def test_charades_malformed(tmp_path, text, line, needle):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    _raises(path, "charades_sta", f"{path}, line {line}: ", needle, durations={"V": 10.0})


def test_charades_missing_durations(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("V 1 2##x\n")
    _raises(path, "charades_sta", "pass the durations file")
    with pytest.raises(DataError, match=r"nope\.json: durations file does not exist"):
        read_annotations(path, "charades_sta", tmp_path / "nope.json")


def test_charades_not_utf8(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"V 1 2##caf\xe9\n")
    _raises(path, "charades_sta", "not UTF-8", durations={"V": 10.0})


def _anet(**record) -> dict:
    base = {"duration": 10.0, "timestamps": [[1, 2]], "sentences": ["x"]}
    base.update(record)
    return {"v_a": base}


@pytest.mark.parametrize(
    "data, needle",
    [
        ([1], "expected a JSON object keyed by video id"),
        ({"v_a": [1]}, "video 'v_a': expected an object"),
        ({"v_a": {"duration": 1, "sentences": []}}, "video 'v_a': missing key 'timestamps'"),
        (_anet(timestamps=[[1, 2], [3, 4]]), "video 'v_a': 2 timestamps but 1 sentences"),
        (_anet(timestamps=[[1, "2"]]), "video 'v_a': timestamps[0] must be [start, end]"),
        (_anet(timestamps=[[1, 2, 3]]), "video 'v_a': timestamps[0] must be [start, end]"),
        (_anet(timestamps={"a": 1}), "video 'v_a': 'timestamps' must be a list"),
        (_anet(sentences=[" "]), "video 'v_a': sentences[0] is empty"),
        (_anet(sentences=[3]), "video 'v_a': sentences[0] must be a string"),
        (_anet(duration="10"), "video 'v_a': duration must be a positive finite number"),
        (_anet(duration=True), "video 'v_a': duration must be a positive finite number"),
    ],
)
def test_activitynet_malformed(tmp_path, data, needle):
    path = tmp_path / "anet.json"
    path.write_text(json.dumps(data))
    _raises(path, "activitynet", f"{path}: ", needle)


def test_json_syntax_errors(tmp_path):
    path = tmp_path / "anet.json"
    path.write_text('{\n  "v_a": {"duration": 10,\n}')
    _raises(path, "activitynet", f"{path}, line 3: ", "invalid JSON")
    path.write_text('{"v_a": {"duration": 1, "timestamps": [], "sentences": []}, "v_a": {}}')
    _raises(path, "activitynet", "duplicate key 'v_a'")


@pytest.mark.parametrize(
    "record, needle",
    [
        ({"timestamps": [[0, 1]], "sentences": ["a"], "fps": 10}, "video 'x.avi': missing key 'num_frames'"),
        (
            {"timestamps": [[0, 1]], "sentences": ["a"], "fps": 0, "num_frames": 5},
            "video 'x.avi': fps must be",
        ),
        (
            {"timestamps": [[0, 1]], "sentences": [], "fps": 1, "num_frames": 5},
            "1 timestamps but 0 sentences",
        ),
    ],
)
def test_tacos_malformed(tmp_path, record, needle):
    path = tmp_path / "tacos.json"
    path.write_text(json.dumps({"x.avi": record}))
    _raises(path, "tacos", f"{path}: ", needle)


def test_tacos_clashing_video_ids(tmp_path):
    path = tmp_path / "tacos.json"
    rec = {"timestamps": [[0, 1]], "sentences": ["a"], "fps": 1, "num_frames": 5}
    path.write_text(json.dumps({"x.avi": rec, "x": rec}))
    _raises(path, "tacos", "'x.avi' and 'x' both have video id 'x'")


GOOD = {"qid": 1, "query": "q", "vid": "v", "duration": 10, "relevant_windows": [[1, 2]]}


@pytest.mark.parametrize(
    "line2, needle",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object per line"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "vid"} | {"qid": 2}), "missing key 'vid'"),
        (
            json.dumps(GOOD | {"qid": 2, "relevant_windows": []}),
            "'relevant_windows' must be a non-empty list",
        ),
        (json.dumps(GOOD | {"qid": 2, "relevant_windows": [[1, 2], [3]]}), "'relevant_windows'[1] must be"),
        (json.dumps(GOOD | {"qid": 2, "query": ""}), "empty 'query'"),
        (json.dumps(GOOD | {"qid": 2, "query": 5}), "'query' must be a string"),
        (json.dumps(GOOD | {"qid": True}), "'qid' must be an integer or a string"),
        (json.dumps(GOOD | {"qid": 2, "duration": None}), "'duration' must be a positive finite number"),
        (json.dumps(GOOD | {"qid": "1"}), "duplicate qid '1' on line 1 and line 2"),
    ],
)
def test_jsonl_malformed(tmp_path, line2, needle):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line2 + "\n", encoding="utf-8")
    _raises(path, "jsonl", f"{path}, line 2: ", needle)


def test_missing_file_and_unknown_format(tmp_path):
    missing = tmp_path / "missing.txt"
    for fmt in FORMATS:
        _raises(missing, fmt, "does not exist", durations={"V": 1.0})
    with pytest.raises(DataError, match="does not exist"):
        load_durations(tmp_path / "missing.json")
    with pytest.raises(DataError, match="does not exist"):
        annotation_hash(missing)
    path = tmp_path / "a.txt"
    path.write_text("V 1 2##x\n")
    message = _raises(path, "qvhighlights", "unknown annotation format 'qvhighlights'")
    assert all(fmt in message for fmt in FORMATS)


def test_bad_durations_mapping(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("V 1 2##x\n")
    with pytest.raises(DataError, match="video 'V' must be a positive finite number"):
        read_annotations(path, "charades_sta", {"V": float("nan")})


def test_write_charades_rejects_unwritable(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(DataError, match="whitespace"):
        write_charades_sta([Sample("a b_0", "a b", 10, 1, 2, "x")], path)
    with pytest.raises(DataError, match="line break"):
        write_charades_sta([Sample("a_0", "a", 10, 1, 2, "x\ny")], path)
    assert list(tmp_path.iterdir()) == []


def test_annotation_hash(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    assert annotation_hash(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
