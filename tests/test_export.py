"""`emtm export`: a self-contained model folder, loaded without unpickling, refusing tampered files."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emtm import Grounder
from emtm.cli import main
from emtm.data.annotations import annotation_hash
from emtm.data.text import load_word_vectors
from emtm.engine.checkpoint import load_run, save_weights, write_run_config
from emtm.engine.model_dir import MODEL_FORMAT_VERSION, file_sha256, load_model_dir
from emtm.errors import EmtmError
from emtm.models.registry import build_model, model_config
from helpers import train_tiny_student

FEATURES = np.random.default_rng(0).normal(size=(45, 64)).astype(np.float32)
QUERY = "a person opens the door"


@pytest.fixture(scope="module")
def run_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny student run (0 epochs: validated once and saved), with a test.json."""
    out = train_tiny_student(tiny_data, tmp_path_factory.mktemp("export") / "run", epochs=0)
    assert main(["evaluate", "--run", str(out), "--json", str(out / "test.json"), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def model_dir(run_dir: Path) -> Path:
    out = run_dir.parent / "models" / "tiny"
    assert main(["export", "--run", str(run_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def test_the_folder_holds_only_the_model(model_dir: Path, run_dir: Path, tiny_data: Path) -> None:
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "vocab.json",
    ]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["format"] == "emtm-model" and config["format_version"] == MODEL_FORMAT_VERSION
    assert config["architecture"]["name"] == "student" and config["architecture"]["options"]["d"] == 32
    feats = config["features"]
    assert (feats["video_dim"], feats["max_video_len"], feats["clip_seconds"]) == (64, 64, 1.0)
    assert "mean" in feats["pooling"]
    text = config["text"]
    assert (text["word_vectors"], text["word_dim"], text["tokenizer"]) == (
        "glove-6b-50d",
        50,
        "emtm.data.text.tokenize",
    )
    training = config["training"]
    assert training["dataset"] == "synth-tiny" and training["format"] == "charades_sta"
    assert training["annotations"]["train"]["sha256"] == annotation_hash(tiny_data.parent / "train.txt")
    test = json.loads((run_dir / "test.json").read_text())
    assert config["metrics"]["test"]["r1@0.7"] == test["r1@0.7"]
    assert config["metrics"]["val"]["n_queries"] > 0
    card = (model_dir / "README.md").read_text()
    assert "| test |" in card and f"{test['miou']:.2f}" in card and "synth-tiny" in card
    files = config["files"]
    assert files["model.safetensors"]["sha256"] == file_sha256(model_dir / "model.safetensors")


def test_the_weights_hold_the_vocabulary_word_vectors(model_dir: Path) -> None:
    """No GloVe file is needed: the weights carry one 50-d row per vocabulary word."""
    weights = load_file(str(model_dir / "model.safetensors"))
    vocab = json.loads((model_dir / "vocab.json").read_text())["words"]
    rows = weights["encoder.words.vectors"]
    assert rows.shape == (len(vocab), 50) and not rows[:2].any()  # PAD, UNK
    glove = load_word_vectors("glove-6b-50d")
    for i in (2, 3, len(vocab) - 1):
        np.testing.assert_array_equal(rows[i].numpy(), glove.get(vocab[i]))


def test_the_exported_model_grounds_like_the_run(model_dir: Path, run_dir: Path) -> None:
    from_run = Grounder.load(run_dir, device="cpu")
    exported = Grounder.load(model_dir, device="cpu")
    assert exported.config["training"] == from_run.config["training"]
    assert exported.ground(FEATURES, QUERY, top_k=5) == from_run.ground(FEATURES, QUERY, top_k=5)
    assert exported.ground(FEATURES, QUERY).end <= 45.0  # duration: 45 clips x 1 s


def test_loading_never_unpickles(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading a model folder")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_model_dir(model_dir).spec.video_dim == 64


def flip_byte(path: Path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_config(path: Path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def refresh_hash(path: Path, name: str) -> None:
    """Record the current size and sha256 of a file, as someone forging a consistent folder would."""
    rewrite_config(
        path,
        lambda c: c["files"].update(
            {name: {"bytes": (path / name).stat().st_size, "sha256": file_sha256(path / name)}}
        ),
    )


def test_a_flipped_byte_in_the_weights_is_refused(copy: Path) -> None:
    flip_byte(copy / "model.safetensors")
    with pytest.raises(EmtmError, match=r"model\.safetensors: sha256 does not match"):
        Grounder.load(copy)


def test_truncated_weights_are_refused(copy: Path) -> None:
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(EmtmError, match=r"model\.safetensors: \d+ bytes, but config.json records \d+"):
        Grounder.load(copy)
    refresh_hash(copy, "model.safetensors")  # even with a matching record: not a readable file
    with pytest.raises(EmtmError, match=r"model\.safetensors: not a readable safetensors file"):
        Grounder.load(copy)


def test_edited_tensor_shapes_are_refused(copy: Path) -> None:
    """A forged header (shapes edited, hashes recomputed) still does not fit the architecture."""
    path = copy / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    key = next(k for k, v in header.items() if k != "__metadata__" and len(set(v.get("shape", []))) == 2)
    header[key]["shape"] = header[key]["shape"][::-1]  # same number of bytes, transposed shape
    new_header = json.dumps(header, separators=(",", ":")).encode()
    assert len(new_header) <= n
    path.write_bytes(data[:8] + new_header.ljust(n) + data[8 + n :])
    refresh_hash(copy, "model.safetensors")
    with pytest.raises(EmtmError, match=rf"model\.safetensors: tensor shapes do not match.*{key}"):
        Grounder.load(copy)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["architecture"]["options"].update(d=64),
        lambda c: c["features"].update(max_video_len=10**9),  # checked before anything is allocated
        lambda c: c["text"].update(word_dim=10**9),
    ],
)
def test_an_edited_architecture_is_refused(copy: Path, edit) -> None:
    rewrite_config(copy, edit)
    with pytest.raises(EmtmError, match=r"model\.safetensors: tensor shapes do not match"):
        Grounder.load(copy)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c.update(format_version=99), "format_version 99, but this emtm"),
        (lambda c: c.pop("format_version"), "format_version None"),
        (lambda c: c["features"].pop("video_dim"), r"config\.json: features\.video_dim: Field required"),
        (lambda c: c["features"].update(video_dim=0), r"config\.json: features\.video_dim: Input should be"),
        (lambda c: c.update(extra_field=1), r"config\.json: extra_field: Extra inputs"),
        (lambda c: c["files"].pop("vocab.json"), "no size and sha256 recorded for vocab.json"),
    ],
)
def test_an_edited_config_is_refused(copy: Path, edit, needle: str) -> None:
    rewrite_config(copy, edit)
    with pytest.raises(EmtmError, match=needle):
        Grounder.load(copy)


def test_damaged_config_and_vocab_are_refused(copy: Path) -> None:
    text = (copy / "config.json").read_text()
    (copy / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(EmtmError, match=r"config\.json: not valid JSON"):
        Grounder.load(copy)
    (copy / "config.json").write_text(text)
    vocab = (copy / "vocab.json").read_text()
    (copy / "vocab.json").write_text(vocab.replace('"<unk>"', '"<UNK>"'))
    with pytest.raises(EmtmError, match=r"vocab\.json: sha256 does not match"):
        Grounder.load(copy)


def test_a_distilled_run_exports_only_its_student(run_dir: Path, tmp_path: Path) -> None:
    loaded = load_run(run_dir)
    options = {**loaded.cfg.model_options, "n_teachers": 1}
    torch.manual_seed(1)
    vectors = loaded.model.encoder.words.vectors
    joint = build_model("emtm", model_config("emtm", options), loaded.spec.to_spec(vectors))
    emtm_dir = tmp_path / "emtm"
    write_run_config(
        emtm_dir, loaded.cfg.model_copy(update={"model": "emtm", "model_options": options}), loaded.spec
    )
    loaded.vocab.save(emtm_dir / "vocab.json")
    save_weights(joint, emtm_dir / "model.safetensors")
    assert any(
        k.startswith(("dual.", "kau.", "iso_head.")) for k in load_file(emtm_dir / "model.safetensors")
    )
    out = tmp_path / "models" / "emtm"
    assert main(["export", "--run", str(emtm_dir), "--out", str(out)]) == 0
    keys = load_file(out / "model.safetensors")
    assert keys and all(k.startswith(("encoder.", "head.")) for k in keys)
    config = json.loads((out / "config.json").read_text())
    assert (
        config["architecture"]["name"] == "student" and "n_teachers" not in config["architecture"]["options"]
    )
    assert config["training"]["distilled_from"] == "emtm"
    joint_run = load_run(emtm_dir)  # the joint model at inference runs its student path only
    expected = Grounder(joint_run, {"features": {}}).ground(FEATURES, QUERY, duration=45.0, top_k=3)
    got = Grounder.load(out).ground(FEATURES, QUERY, duration=45.0, top_k=3)
    np.testing.assert_allclose([astuple(m) for m in got], [astuple(m) for m in expected], rtol=1e-5)


def test_export_refuses_to_overwrite_a_run(
    run_dir: Path, model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["export", "--run", str(run_dir), "--out", str(run_dir)]) == 2
    assert "not an exported model (a run?)" in capsys.readouterr().err
    assert main(["export", "--run", str(model_dir), "--out", str(run_dir.parent / "x")]) == 2
    assert "already an exported model folder" in capsys.readouterr().err


def test_a_run_with_weights_of_the_wrong_shape_is_a_clear_error(run_dir: Path, tmp_path: Path) -> None:
    bad = Path(shutil.copytree(run_dir, tmp_path / "run"))
    config = json.loads((bad / "config.json").read_text())
    config["train"]["model_options"]["d"] = 48
    config["train"]["model_options"]["n_heads"] = 4
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmtmError, match=r"model\.safetensors: weights do not fit the model in config\.json"):
        load_run(bad)
