"""The built-in synthetic benchmark and synthetic features for real annotations."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from emtm.config import load_data_config
from emtm.data.annotations import load_durations, read_annotations
from emtm.data.synth import (
    ACTIONS,
    OBJECTS,
    PRESETS,
    SentenceEncoder,
    SynthConfig,
    compatible_pairs,
    generate,
    make_prototypes,
    make_scripts,
    make_sentence,
    query_kind,
    render_video,
    split_from_filename,
    synthesize_features_for_annotations,
    vocabulary_words,
    with_overrides,
)
from emtm.data.text import load_word_vectors, tokenize
from emtm.errors import ConfigError, DataError

TINY = PRESETS["tiny"]
MICRO = dataclasses.replace(TINY, n_train_videos=8, n_test_videos=4)
REAL_ANNOTATIONS = Path(__file__).resolve().parents[1].parent / "shared/data/annotations"


def _read(data_yaml: Path, split: str):
    root = data_yaml.parent
    durations = load_durations(root / "durations.json")
    samples, report = read_annotations(root / f"{split}.txt", "charades_sta", durations)
    return samples, report, durations


def test_tiny_preset_generates_a_readable_benchmark(tmp_path):
    data_yaml = generate(TINY, tmp_path, progress=False)
    assert data_yaml == tmp_path / "data.yaml"
    meta = yaml.safe_load(data_yaml.read_text())
    assert meta["format"] == "charades_sta" and meta["features"] == "features"
    assert meta["splits"] == {"train": "train.txt", "test": "test.txt"}
    assert meta["synth"]["preset"] == "tiny" and meta["synth"]["feature_dim"] == 64
    config = load_data_config(data_yaml)
    assert config.max_video_len == 64 and config.word_vectors == "glove-6b-50d"

    scripts = make_scripts(TINY)
    ids = set()
    for split, n_videos in (("train", TINY.n_train_videos), ("test", TINY.n_test_videos)):
        samples, report, durations = _read(data_yaml, split)
        assert report.n_dropped == 0 and report.n_clipped == 0
        assert len(samples) == sum(len(s.queries) for s in scripts[split])
        assert len({s.video_id for s in samples}) <= n_videos
        for s in samples:
            assert 0 <= s.start < s.end <= s.duration == durations[s.video_id]
        ids |= {s.video_id for s in scripts[split]}
    assert len(ids) == TINY.n_train_videos + TINY.n_test_videos  # unique across splits
    assert all(re.fullmatch(r"S\d{4}[A-Z]", vid) for vid in ids)
    durations = load_durations(tmp_path / "durations.json")
    assert set(durations) == ids
    for vid, duration in durations.items():
        feats = np.load(tmp_path / "features" / f"{vid}.npy")
        assert feats.dtype == np.float32 and feats.shape == (max(1, round(duration)), 64)
        assert np.isfinite(feats).all() and feats.shape[0] <= config.max_video_len


def test_script_statistics_look_like_charades_sta():
    cfg = dataclasses.replace(PRESETS["default"], n_train_videos=1200, n_test_videos=400, seed=3)
    scripts = make_scripts(cfg)
    pairs = set(compatible_pairs(cfg.n_actions, cfg.n_objects))
    for split, target in (("train", cfg.train_queries_per_video), ("test", cfg.test_queries_per_video)):
        videos = scripts[split]
        durations = np.array([v.duration for v in videos])
        moments = np.array([q.end - q.start for v in videos for q in v.queries])
        assert 28 < durations.mean() < 34 and durations.min() >= 12 and durations.max() <= 60
        assert 7 < moments.mean() < 9 and moments.min() >= 1.0
        assert min(e.end - e.start for v in videos for e in v.events) >= 1.9
        assert abs(sum(len(v.queries) for v in videos) / len(videos) - target) < 0.15
        for v in videos:
            assert 3 <= len(v.events) <= 6
            combos = [(e.action, e.object) for e in v.events]
            assert len(set(combos)) == len(combos) and set(combos) <= pairs
            spans = sorted((e.start, e.end) for e in v.events)
            assert all(e0 <= s1 for (_, e0), (s1, _) in zip(spans, spans[1:]))  # no overlap
            assert all(0 <= s < e <= v.duration for s, e in spans)
            assert len({q.event for q in v.queries}) == len(v.queries)
            assert all(0 <= q.start < q.end <= v.duration for q in v.queries)
    # Distractors: events often share the action or the object with another event of the video.
    videos = scripts["train"]
    shared = [
        any(a.action == b.action or a.object == b.object for b in v.events if b is not a)
        for v in videos
        for a in v.events
    ]
    assert np.mean(shared) > 0.4
    # The anchor event is not always the first one in time.
    firsts = {(v.events[0].action, v.events[0].object) for v in videos}
    assert len(firsts) > 50


def test_presets_match_their_purpose():
    default = PRESETS["default"]
    assert (default.n_train_videos, default.n_test_videos) == (5338, 1334)
    assert default.feature_dim == 256 and default.n_actions >= 25 and default.n_objects >= 40
    assert 1000 <= PRESETS["small"].n_train_videos <= 2000
    assert TINY.n_train_videos <= 100 and TINY.feature_dim == 64
    with pytest.raises(ConfigError):
        SynthConfig(n_actions=len(ACTIONS) + 1)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    def files(cfg: SynthConfig, name: str) -> dict[str, bytes]:
        out = tmp_path / name
        generate(cfg, out, progress=False)
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    a, b = files(MICRO, "a"), files(MICRO, "b")
    assert a == b
    c = files(dataclasses.replace(MICRO, seed=1), "c")
    assert a["train.txt"] != c["train.txt"]
    feats_a = [v for k, v in a.items() if k.endswith(".npy")]
    feats_c = [v for k, v in c.items() if k.endswith(".npy")]
    assert feats_a and not set(feats_a) & set(feats_c)


def test_every_sentence_word_is_in_glove():
    glove = set(load_word_vectors("glove-6b-50d").words)
    vocab = vocabulary_words()
    assert not vocab - glove
    assert len(ACTIONS) >= 30 and len(OBJECTS) >= 40
    rng = np.random.default_rng(0)
    sentences = [make_sentence(a, o, rng) for a, o in compatible_pairs(len(ACTIONS), len(OBJECTS))]
    for v in make_scripts(TINY)["train"]:
        sentences += [q.sentence for q in v.queries]
    for sentence in sentences:
        tokens = tokenize(sentence)
        assert tokens and set(tokens) <= vocab, sentence
    assert len(set(sentences)) > 0.9 * len(sentences)  # varied templates, verbs and names
    # Every action and object of the default config has several partners (distractors exist).
    pairs = compatible_pairs(PRESETS["default"].n_actions, PRESETS["default"].n_objects)
    for a in range(PRESETS["default"].n_actions):
        assert sum(p[0] == a for p in pairs) >= 2, ACTIONS[a].name
    for o in range(PRESETS["default"].n_objects):
        assert sum(p[1] == o for p in pairs) >= 3, OBJECTS[o].names


def test_reverse_actions_share_phases_in_opposite_order():
    protos = make_prototypes(TINY)
    names = [a.name for a in ACTIONS]
    for i, action in enumerate(ACTIONS):
        if action.reverse_of is not None:
            a, b = protos.action_phases[names.index(action.reverse_of)]
            assert protos.action_phases[i] == (b, a)
    assert len({p for pair in protos.action_phases for p in pair}) == protos.phases.shape[0]


def test_features_encode_the_queried_moment():
    cfg = dataclasses.replace(TINY, n_train_videos=40, n_test_videos=0)
    protos = make_prototypes(cfg)
    wins = []
    for video in make_scripts(cfg)["train"]:
        x = render_video(cfg, video, protos).astype(np.float64)
        t = np.arange(len(x)) + 0.5
        inside = np.zeros(len(x), bool)
        for e in video.events:
            inside |= (t > e.start - 1) & (t < e.end + 1)
        if inside.all():
            continue
        for q in video.queries:
            e = video.events[q.event]
            a, b = protos.action_phases[e.action]
            target = protos.phases[a] + protos.phases[b] + protos.objects[e.object]
            span = x[(t > e.start) & (t < e.end)].mean(0)
            background = x[~inside].mean(0)
            cos = [v @ target / np.linalg.norm(v) / np.linalg.norm(target) for v in (span, background)]
            wins.append(cos[0] > cos[1])
    assert len(wins) > 30 and np.mean(wins) > 0.9


def test_h5_output(tmp_path):
    h5py = pytest.importorskip("h5py")
    data_yaml = generate(MICRO, tmp_path, feature_format="h5", progress=False)
    assert yaml.safe_load(data_yaml.read_text())["features"] == "features.h5"
    durations = load_durations(tmp_path / "durations.json")
    with h5py.File(tmp_path / "features.h5", "r") as f:
        assert set(f.keys()) == set(durations)
        for vid, duration in durations.items():
            assert f[vid].shape == (round(duration), MICRO.feature_dim) and f[vid].dtype == np.float32
    with pytest.raises(ConfigError):
        generate(MICRO, tmp_path / "bad", feature_format="pt", progress=False)


def _write_charades(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, float]]:
    durations = {"VIDA1": 30.4, "VIDB2": 12.6, "VIDC3": 0.4}
    train = tmp_path / "ann" / "my_train.txt"
    test = tmp_path / "ann" / "my_test.txt"
    train.parent.mkdir()
    train.write_text(
        "VIDA1 2.0 9.5##a person opens the door.\n"
        "VIDA1 2.0 9.5##person opened a door.\n"
        "VIDA1 14.0 22.0##the person is eating a sandwich.\n"
        "VIDB2 0.0 5.0##someone sits on a chair.\n"
    )
    test.write_text("VIDA1 14.0 22.0##the person is eating a sandwich.\nVIDC3 0.0 0.4##a person sneezes.\n")
    dur_path = tmp_path / "ann" / "durations.json"
    dur_path.write_text(json.dumps(durations))
    return train, test, dur_path, durations


def test_synthesize_features_for_annotations(tmp_path):
    train, test, dur_path, durations = _write_charades(tmp_path)
    out = tmp_path / "out"
    data_yaml = synthesize_features_for_annotations(
        [train, test], "charades_sta", out, durations=dur_path, feature_dim=32, progress=False
    )
    meta = yaml.safe_load(data_yaml.read_text())
    assert meta["format"] == "charades_sta" and meta["max_video_len"] == 64
    assert meta["splits"] == {"train": str(train.resolve()), "test": str(test.resolve())}
    assert meta["durations"] == str(dur_path.resolve())
    assert not list(out.glob("*.txt"))  # annotation files are never copied
    load_data_config(data_yaml)
    files = sorted(p.stem for p in (out / "features").glob("*.npy"))
    assert files == sorted(durations)  # VIDA1 is in both files: written once
    for vid, duration in durations.items():
        feats = np.load(out / "features" / f"{vid}.npy")
        assert feats.shape == (max(1, round(duration)), 32)
    # The moment's span carries its sentence.
    feats = np.load(out / "features" / "VIDA1.npy").astype(np.float64)
    encoder = SentenceEncoder(32, seed=0)
    target = encoder("a person opens the door.") + encoder("person opened a door.")
    cos = feats @ target / np.linalg.norm(feats, axis=1) / np.linalg.norm(target)
    assert cos[3:9].mean() > cos[24:].mean() + 0.1
    # h5 output, and the same seed gives the same features.
    synthesize_features_for_annotations(
        [train, test], "charades_sta", tmp_path / "h5", dur_path, 32, feature_format="h5", progress=False
    )
    import h5py

    with h5py.File(tmp_path / "h5" / "features.h5", "r") as f:
        assert np.array_equal(f["VIDA1"][()], np.load(out / "features" / "VIDA1.npy"))


def test_related_words_give_related_sentence_vectors():
    encoder = SentenceEncoder(256, seed=0)
    same = encoder("a person opens the door.") @ encoder("someone opened a door.")
    related = encoder("a person opens the door.") @ encoder("a person closes the window.")
    other = encoder("a person opens the door.") @ encoder("the man eats a sandwich.")
    assert same > 0.5 and related > other


def test_split_names_come_from_file_names(tmp_path):
    assert split_from_filename("charades_sta_train.txt") == "train"
    assert split_from_filename("/x/val.json") == "val"
    assert split_from_filename("TEST.json") == "test"
    for bad in ("trainval.json", "annotations.txt"):
        with pytest.raises(DataError):
            split_from_filename(bad)
    train, _, dur_path, _ = _write_charades(tmp_path)
    other = train.with_name("more_train.txt")
    other.write_text(train.read_text())
    with pytest.raises(DataError):
        synthesize_features_for_annotations([train, other], "charades_sta", tmp_path / "o", dur_path)


@pytest.mark.skipif(not (REAL_ANNOTATIONS / "charades_sta").is_dir(), reason="no real annotations here")
def test_synthesize_features_for_real_charades_sta(tmp_path):
    root = REAL_ANNOTATIONS / "charades_sta"
    files = [root / "charades_sta_train.txt", root / "charades_sta_test.txt"]
    durations = root / "charades_durations.json"
    data_yaml = synthesize_features_for_annotations(
        files, "charades_sta", tmp_path, durations, feature_dim=64, max_videos=25, progress=False
    )
    config = load_data_config(data_yaml)
    assert config.split_path("test") == files[1].resolve()
    table = load_durations(durations)
    test_samples, _ = read_annotations(files[1], "charades_sta", table)
    first = list(dict.fromkeys(s.video_id for s in test_samples))[:25]
    written = {p.stem for p in (tmp_path / "features").glob("*.npy")}
    assert len(written) == 50 and set(first) <= written
    for vid in written:
        assert np.load(tmp_path / "features" / f"{vid}.npy").shape == (max(1, round(table[vid])), 64)


def test_relational_preset_repeats_events_and_queries_say_which_instance():
    cfg = dataclasses.replace(PRESETS["small-relational"], n_train_videos=300, n_test_videos=0)
    videos = make_scripts(cfg)["train"]
    vocab = vocabulary_words()
    pairs = lambda v: [(e.action, e.object) for e in v.events]  # noqa: E731
    repeated = [v for v in videos if len(set(pairs(v))) < len(v.events)]
    # P(repeat) = 0.8, but a video that cannot fit all its events drops some, often the twin
    assert 0.3 < len(repeated) / len(videos) < 0.8
    kinds = {"after": 0, "before": 0, "ordinal": 0}
    for v in videos:
        for q in v.queries:
            assert set(tokenize(q.sentence)) <= vocab, q.sentence
            twins = [j for j, p in enumerate(pairs(v)) if p == pairs(v)[q.event]]
            if len(twins) == 1:
                assert not re.search(r"for the \w+ time\.$| (after|before) \w+ing ", q.sentence), q.sentence
                assert query_kind(q.sentence) == "single", q.sentence
                continue
            assert " again" not in q.sentence, q.sentence
            if m := re.search(r"for the (first|second) time\.$", q.sentence):
                kinds["ordinal"] += 1
                assert query_kind(q.sentence) == "ordinal", q.sentence
                assert twins.index(q.event) == ("first", "second").index(m.group(1))
                continue
            m = re.search(r" (after|before) (\w+ing) .*\.$", q.sentence)
            assert m, q.sentence
            assert query_kind(q.sentence) == "relational", q.sentence
            kinds[m.group(1)] += 1
            neighbour = v.events[q.event - 1 if m.group(1) == "after" else q.event + 1]
            verbs = {verb.ing for verb in ACTIONS[neighbour.action].verbs}
            assert m.group(2) in verbs and (neighbour.action, neighbour.object) != pairs(v)[q.event]
    assert min(kinds.values()) > 20, kinds
    # Off by default: the Charades-like presets are unchanged.
    assert PRESETS["default"].repeat_share == 0 == PRESETS["small"].repeat_share


def test_oracle_ceiling_is_below_100_only_through_the_annotation_jitter(load_benchmark):
    ceiling = load_benchmark("synth_ceiling")
    small = dataclasses.replace(PRESETS["tiny"], n_train_videos=0, n_test_videos=200)
    exact = ceiling.oracle_metrics(dataclasses.replace(small, boundary_jitter=0.0))
    assert exact["event span"]["r1@0.7"] == 100.0 and exact["event span"]["miou"] > 99.99
    assert exact["event span, whole clips"]["r1@0.7"] < 100.0  # rounding to clips costs a little
    jittered = ceiling.oracle_metrics(small)["event span"]
    assert 60.0 < jittered["r1@0.7"] < 95.0 and jittered["r1@0.3"] > 95.0


def test_knobs_of_a_preset_can_be_changed_and_are_checked():
    cfg = with_overrides(TINY, {"noise_std": 1, "repeat_share": 0.5})
    assert cfg.noise_std == 1.0 and isinstance(cfg.noise_std, float) and cfg.repeat_share == 0.5
    assert cfg.n_train_videos == TINY.n_train_videos and TINY.noise_std == 0.5  # the preset is untouched
    with pytest.raises(ConfigError, match=r"--set noise: not a synth knob; the knobs are seed, .*noise_std"):
        with_overrides(TINY, {"noise": 0.2})
    with pytest.raises(ConfigError, match=r"n_train_videos=1.5: expected type int, like 60"):
        with_overrides(TINY, {"n_train_videos": 1.5})
    with pytest.raises(ConfigError, match="repeat_share and relation_share must be probabilities"):
        with_overrides(TINY, {"repeat_share": 2.0})  # the config's own checks still run


def test_synth_cli_set_writes_the_changed_knobs(tmp_path, capsys):
    from emtm.cli import main

    args = ["synth", "--preset", "tiny", "--seed", "0"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--set", "noise_std=0.1", "--out", str(tmp_path / "clear")]) == 0
    plain, clear = (
        yaml.safe_load((tmp_path / n / "data.yaml").read_text())["synth"] for n in ("plain", "clear")
    )
    assert plain["preset"] == "tiny" and "preset" not in clear and clear["noise_std"] == 0.1
    assert (tmp_path / "plain/train.txt").read_text() == (tmp_path / "clear/train.txt").read_text()
    vid = sorted((tmp_path / "plain/features").glob("*.npy"))[0].name
    a, b = (np.load(tmp_path / n / "features" / vid) for n in ("plain", "clear"))
    assert a.shape == b.shape and not np.allclose(a, b)
    assert main([*args, "--set", "noise_std", "--out", str(tmp_path / "x")]) == 2
    assert "--set 'noise_std': expected KEY=VALUE" in capsys.readouterr().err
    ann = tmp_path / "plain" / "train.txt"
    assert (
        main(["synth", "--annotations", str(ann), "--set", "noise_std=0.1", "--out", str(tmp_path / "y")])
        == 2
    )
    assert "--set changes a preset's knobs" in capsys.readouterr().err


def test_distill_benchmark_writes_its_data_once_and_refuses_other_knobs(tmp_path, load_benchmark):
    import argparse

    bench = load_benchmark("distill")
    args = argparse.Namespace(charades=None, preset="tiny", synth_option=["noise_std=0.1"])
    path = bench.data_yaml(args, tmp_path)
    stamp = path.stat().st_mtime_ns
    assert bench.data_yaml(args, tmp_path) == path and path.stat().st_mtime_ns == stamp  # read, not rewritten
    with pytest.raises(SystemExit, match=r"written with other synth knobs \(noise_std\): use another --out"):
        bench.data_yaml(argparse.Namespace(charades=None, preset="tiny", synth_option=[]), tmp_path)


def test_distill_benchmark_scores_each_kind_of_query(load_benchmark):
    bench = load_benchmark("distill")
    ious = {
        "a": {"q1": 0.8, "q2": 0.6, "q3": 0.9, "q4": 0.2},
        "b": {"q1": 0.1, "q2": 0.75, "q3": 0.0, "q4": 0.7},
    }
    kinds = {"q1": "single", "q2": "single", "q3": "relational", "q4": "relational"}
    got = bench.kind_breakdown(ious, kinds)
    assert set(got["a"]) == {"single", "relational"}  # no ordinal queries: no ordinal entry
    assert got["a"]["single"] == {"queries": 2, "r1@0.7": 50.0, "miou": pytest.approx(70.0)}
    assert got["b"]["relational"] == {"queries": 2, "r1@0.7": 50.0, "miou": pytest.approx(35.0)}
    assert got["a"]["relational"]["r1@0.7"] == 50.0 and got["b"]["single"]["r1@0.7"] == 50.0


def test_distill_benchmark_counts_the_queries_two_models_both_miss(load_benchmark):
    bench = load_benchmark("distill")
    ious = {
        "a": {"q1": 0.0, "q2": 0.5, "q3": 0.05, "q4": 0.8},
        "b": {"q1": 0.09, "q2": 0.05, "q3": 0.9, "q4": 0.1},
    }
    got = bench.miss_overlap(ious, "a", "b")
    assert got == {"missed (IoU<0.1): a": 50.0, "missed: b": 50.0, "missed: both": 25.0}


def test_hard_preset_repeats_more_events_and_has_more_distractors_than_relational():
    def stats(name: str) -> tuple[float, float, float]:
        cfg = dataclasses.replace(PRESETS[name], n_train_videos=400, n_test_videos=0)
        videos = make_scripts(cfg)["train"]
        pairs = [[(e.action, e.object) for e in v.events] for v in videos]
        repeated = sum(len(set(p)) < len(p) for p in pairs) / len(videos)
        later = [(p[i], p[:i]) for p in pairs for i in range(1, len(p))]
        shares = sum(any(a == b[0] or o == b[1] for b in before) for (a, o), before in later) / len(later)
        twins = [q for v, p in zip(videos, pairs) for q in v.queries if p.count(p[q.event]) > 1]
        return repeated, shares, len(twins) / sum(len(v.queries) for v in videos)

    relational, hard = stats("relational"), stats("hard")
    assert hard[0] > relational[0] + 0.04, (relational, hard)  # more videos repeat an event
    assert hard[1] > relational[1] + 0.08, (relational, hard)  # more events share an action or object
    assert hard[2] > relational[2] + 0.03, (relational, hard)  # more queries must say which instance
    full_size = {"n_train_videos": 5338, "n_test_videos": 1334}
    assert dataclasses.replace(PRESETS["small-hard"], **full_size) == PRESETS["hard"]
