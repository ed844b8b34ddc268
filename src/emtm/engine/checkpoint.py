"""A run directory: config.json, vocab.json, weights in safetensors, and the resumable training state.

runs/NAME/
  config.json          full resolved TrainConfig + the data spec the model was built for
  vocab.json           the words and characters the model knows
  model.safetensors    best weights (by validation metric)
  last.safetensors     weights after the last finished epoch
  last_state.pt        optimizer, scheduler, scaler and loop state of that epoch (torch.load weights_only)
  metrics.json, log.csv, curve.png
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import emtm.distill.model  # noqa: F401  (registers the joint 'emtm' model)
from emtm.config import TrainConfig, validate
from emtm.data.text import Vocab
from emtm.errors import EmtmError
from emtm.io import atomic_path, write_json
from emtm.models.base import DataSpec, GroundingModel
from emtm.models.registry import build_model, model_config

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SpecInfo:
    """The JSON-able part of DataSpec; word vectors themselves live in the weights."""

    video_dim: int
    max_video_len: int
    vocab_size: int
    word_dim: int
    n_chars: int
    max_query_len: int = 30
    max_word_chars: int = 16

    def to_spec(self, word_vectors: torch.Tensor | None = None) -> DataSpec:
        if word_vectors is None:
            word_vectors = torch.zeros(self.vocab_size, self.word_dim)
        return DataSpec(self.video_dim, self.max_video_len, word_vectors, self.n_chars, self.max_query_len)


def save_weights(model: GroundingModel, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format_version": str(FORMAT_VERSION)})


def load_weights(model: GroundingModel, path: Path) -> None:
    if not path.exists():
        raise EmtmError(f"{path}: weights not found; is this a finished emtm run directory?")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise EmtmError(
            f"{path}: not a readable safetensors file ({err}); it may be truncated or corrupt"
        ) from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise EmtmError(
            f"{path}: weights do not match the model in config.json "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )


def write_run_config(
    run_dir: Path, cfg: TrainConfig, spec: SpecInfo, extra: dict[str, Any] | None = None
) -> None:
    payload = {
        "format_version": FORMAT_VERSION,
        "train": cfg.model_dump(),
        "spec": asdict(spec),
        **(extra or {}),
    }
    write_json(run_dir / "config.json", payload)


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: TrainConfig
    spec: SpecInfo
    vocab: Vocab
    model: GroundingModel
    raw: dict[str, Any]


def load_run(
    run_dir: str | Path, weights: str = "model.safetensors", device: str | torch.device = "cpu"
) -> LoadedRun:
    """Rebuild a trained model from its run directory. Never unpickles anything."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise EmtmError(f"{run_dir}: no config.json here; pass the folder that `emtm train --out` wrote")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EmtmError(f"{config_path}: not valid JSON ({err})") from None
    if raw.get("format_version") != FORMAT_VERSION:
        raise EmtmError(
            f"{config_path}: format_version {raw.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    try:
        cfg = validate(TrainConfig, raw["train"], str(config_path))
        spec = SpecInfo(**raw["spec"])
    except (KeyError, TypeError) as err:
        problem = f"missing or malformed section ({err}); expected 'train' and 'spec'"
        raise EmtmError(f"{config_path}: {problem}") from None
    vocab = Vocab.load(run_dir / "vocab.json")
    model = build_model(cfg.model, model_config(cfg.model, cfg.model_options), spec.to_spec())
    load_weights(model, run_dir / weights)
    model.to(device).eval()
    return LoadedRun(run_dir, cfg, spec, vocab, model, raw)


def export_student(run_dir: Path, out: Path | None = None) -> Path:
    """Write a plain `student` run (config, vocab, weights) from a distilled EMTM run: no teacher, no KAU."""
    import shutil

    run = load_run(run_dir)
    out = out or run_dir / "student"
    out.mkdir(parents=True, exist_ok=True)
    options = {
        k: v for k, v in run.cfg.model_options.items() if k in type(model_config("student")).model_fields
    }
    student_cfg = run.cfg.model_copy(update={"model": "student", "model_options": options, "teachers": []})
    student = build_model("student", model_config("student", options), run.spec.to_spec())
    student.load_state_dict(run.model.student_state_dict(), strict=True)
    write_run_config(out, student_cfg, run.spec, {"distilled_from": str(run_dir)})
    shutil.copyfile(run_dir / "vocab.json", out / "vocab.json")
    save_weights(student, out / "model.safetensors")
    if (run_dir / "metrics.json").exists():
        shutil.copyfile(run_dir / "metrics.json", out / "metrics.json")
    return out


def save_train_state(run_dir: Path, state: dict[str, Any]) -> None:
    with atomic_path(run_dir / "last_state.pt") as tmp:
        torch.save(state, tmp)


def load_train_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "last_state.pt"
    if not path.exists():
        raise EmtmError(f"{run_dir}: nothing to resume (no last_state.pt); start without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means an unusable file
        raise EmtmError(f"{path}: cannot be read ({err}); delete it to start over") from None
