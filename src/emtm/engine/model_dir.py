"""The model folder's format (what `emtm export` writes), and one loader for runs and model folders.

models/NAME/
  model.safetensors   the weights only (the vocabulary's word vectors included: no GloVe file needed)
  config.json         format and format_version, architecture and options, decoding, feature spec,
                      text spec, training data and metrics, and the size and sha256 of the two files below
  vocab.json          the words and characters the model knows
  README.md           a model card with the metrics

Loading reads JSON and safetensors only (never a pickle) and checks, in this order: config.json's
format, format_version and fields; the size and sha256 of vocab.json and model.safetensors; then
every tensor's name and shape against the architecture. A tampered or truncated file is an
EmtmError that names it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError, safe_open

from emtm import io
from emtm.config import ConfigError, TrainConfig, validate
from emtm.data.text import Vocab
from emtm.engine.checkpoint import LoadedRun, SpecInfo, distilled_student, load_run, load_weights
from emtm.errors import EmtmError
from emtm.models.registry import build_model, model_config
from emtm.version import __version__

MODEL_FORMAT = "emtm-model"
MODEL_FORMAT_VERSION = 1
TOKENIZER = "emtm.data.text.tokenize"  # lower-case words, punctuation dropped, PTB clitics split off
METRIC_KEYS = ("r1@0.3", "r1@0.5", "r1@0.7", "r5@0.3", "r5@0.5", "r5@0.7", "miou", "n_queries")
WEIGHTS, VOCAB, CONFIG, CARD = "model.safetensors", "vocab.json", "config.json", "README.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Architecture(_Strict):
    name: str
    options: dict[str, Any]
    n_trainable: int


class Decoding(_Strict):
    top_k: int
    nms_iou: float | None
    max_moment_len: int | None


class FeatureSpec(_Strict):
    video_dim: int = Field(ge=1)
    max_video_len: int = Field(ge=1)
    pooling: str  # how T > max_video_len clips are fitted to the grid
    clip_seconds: float | None = None  # seconds of video per feature row, when known
    fps: float | None = None  # frames sampled per second by the extractor, when known
    backbone: str | None = None


class TextSpec(_Strict):
    tokenizer: str
    word_vectors: str
    word_dim: int = Field(ge=1)
    vocab_size: int = Field(ge=2)
    n_chars: int = Field(ge=2)
    max_query_len: int = Field(ge=1)
    max_word_chars: int = Field(ge=1)


class Training(_Strict):
    dataset: str | None = None
    format: str | None = None
    annotations: dict[str, dict[str, str]] = {}  # split -> {file, sha256}
    seed: int | None = None
    epochs: int | None = None
    distilled_from: str | None = None


class FileRecord(_Strict):
    bytes: int
    sha256: str


class ModelFile(_Strict):
    """The schema of an exported model's config.json."""

    format: Literal["emtm-model"]
    format_version: int
    emtm_version: str
    architecture: Architecture
    decoding: Decoding
    features: FeatureSpec
    text: TextSpec
    training: Training
    metrics: dict[str, dict[str, float | int | str]]  # "val", "test": flat metrics in percent
    files: dict[str, FileRecord]


def read_json(path: Path) -> Any:
    return io.read_json(path, "the file is damaged, export the model again")


def is_model_dir(path: str | Path) -> bool:
    config = Path(path) / CONFIG
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == MODEL_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load a run directory or an exported model folder, ready for inference on `device`.

    A distilled EMTM run gives its plain student: its `student/` subfolder when present, otherwise
    the student is taken from the joint weights in memory.
    """
    path = Path(path)
    if not (path / CONFIG).exists():
        raise EmtmError(
            f"{path}: no config.json here; pass a run directory (emtm train/distill --out) "
            "or a model folder (emtm export --out)"
        )
    raw = read_json(path / CONFIG)
    if isinstance(raw, dict) and raw.get("format") == MODEL_FORMAT:
        return load_model_dir(path, device)
    if isinstance(raw, dict) and isinstance(raw.get("train"), dict) and raw["train"].get("model") == "emtm":
        if (path / "student" / CONFIG).exists():
            return load_run(path / "student", device=device)
        return distilled_student(load_run(path, device=device))
    return load_run(path, device=device)


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load an exported model folder; every check failure is an EmtmError naming the file."""
    path = Path(path)
    config_path = path / CONFIG
    raw = read_json(config_path)
    if not isinstance(raw, dict) or raw.get("format") != MODEL_FORMAT:
        raise EmtmError(f'{config_path}: not an emtm model config (expected "format": "{MODEL_FORMAT}")')
    if raw.get("format_version") != MODEL_FORMAT_VERSION:
        raise EmtmError(
            f"{config_path}: format_version {raw.get('format_version')!r}, but this emtm {__version__} reads "
            f"version {MODEL_FORMAT_VERSION}; export the model again with this version of emtm"
        )
    try:
        config = validate(ModelFile, raw, str(config_path))
    except ConfigError as err:
        raise EmtmError(f"{err}; the file is damaged or was edited by hand, export the model again") from None
    for name in (VOCAB, WEIGHTS):
        check_file(path / name, config.files.get(name), config_path)
    vocab = Vocab.load(path / VOCAB)
    text = config.text
    if (len(vocab), vocab.n_chars) != (text.vocab_size, text.n_chars):
        raise EmtmError(
            f"{path / VOCAB}: {len(vocab)} words and {vocab.n_chars} characters, but {config_path} records "
            f"{text.vocab_size} and {text.n_chars}"
        )
    spec = SpecInfo(
        config.features.video_dim,
        config.features.max_video_len,
        text.vocab_size,
        text.word_dim,
        text.n_chars,
        text.max_query_len,
        text.max_word_chars,
    )
    arch = config.architecture
    cfg = TrainConfig(
        data="",
        model=arch.name,
        model_options=arch.options,
        eval={"top_k": config.decoding.top_k, "nms_iou": config.decoding.nms_iou,
              "max_moment_len": config.decoding.max_moment_len},
        run={"seed": config.training.seed or 0, "device": "cpu"},
    )  # fmt: skip
    try:
        options = model_config(arch.name, arch.options)
        with torch.device("meta"):  # shapes only, nothing allocated: an edited config cannot exhaust memory
            skeleton = build_model(arch.name, options, spec.to_spec())
    except (EmtmError, ValueError, RuntimeError, TypeError) as err:
        raise EmtmError(f"{config_path}: cannot build the architecture it describes ({err})") from None
    check_shapes(skeleton, path / WEIGHTS)
    model = build_model(arch.name, options, spec.to_spec())
    load_weights(model, path / WEIGHTS)
    model.to(device).eval()
    return LoadedRun(path, cfg, spec, vocab, model, raw)


def check_file(path: Path, record: FileRecord | None, config_path: Path) -> None:
    """The file exists with the size and sha256 that config.json records."""
    if record is None:
        raise EmtmError(f"{config_path}: no size and sha256 recorded for {path.name}; export the model again")
    if not path.is_file():
        raise EmtmError(f"{path}: missing; a model folder needs {CONFIG}, {VOCAB} and {WEIGHTS}")
    size = path.stat().st_size
    if size != record.bytes:
        raise EmtmError(
            f"{path}: {size} bytes, but {config_path.name} records {record.bytes}: the file is truncated "
            "or was modified; copy or export the model again"
        )
    if file_sha256(path) != record.sha256:
        raise EmtmError(
            f"{path}: sha256 does not match the one in {config_path.name}: the file was modified or "
            "damaged; copy or export the model again"
        )


def check_shapes(model: torch.nn.Module, path: Path) -> None:
    """Every tensor of a safetensors file has the name and shape of one in `model`, and vice versa."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as handle:
            found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise EmtmError(
            f"{path}: not a readable safetensors file ({err}); it may be truncated or corrupt"
        ) from None
    if set(found) != set(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        raise EmtmError(
            f"{path}: tensors do not match the architecture (missing {missing[:5]}, extra {extra[:5]})"
        )
    wrong = [f"{k} {found[k]} (expected {expected[k]})" for k in sorted(found) if found[k] != expected[k]]
    if wrong:
        raise EmtmError(
            f"{path}: tensor shapes do not match the architecture in {CONFIG}: {'; '.join(wrong[:3])}"
        )


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
