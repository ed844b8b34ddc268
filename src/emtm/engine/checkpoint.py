"""A run directory: config.json, vocab.json, weights in safetensors, and the resumable training state.

runs/NAME/
  config.json          full resolved TrainConfig + the data spec the model was built for
  vocab.json           the words and characters the model knows
  model.safetensors    best weights (by validation metric)
  last.safetensors     weights after the last finished epoch
  last_state.pt        the last complete checkpoint (end of an epoch, every run.checkpoint_every steps, or
                       on SIGINT/SIGTERM): weights, optimizer, scheduler, scaler, RNG states, data
                       position and history in one atomically written file (torch.load weights_only)
  metrics.json, log.csv, curve.png
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from emtm.config import TrainConfig, validate
from emtm.data.text import Vocab
from emtm.errors import ConfigError, EmtmError
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
    nonfinite = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if nonfinite:
        raise EmtmError(
            f"{path}: {len(nonfinite)} weight tensor(s) hold NaN or Inf values "
            f"(e.g. {sorted(nonfinite)[:3]}); the file is corrupt or the training diverged: "
            "use another checkpoint of the run or retrain"
        )
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise EmtmError(
            f"{path}: weights do not match the model in config.json "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )


def weight_names(path: Path) -> list[str]:
    """The tensor names in a safetensors file, read from its header; [] when it is missing or unreadable
    (`load_weights` then says why)."""
    try:
        with safe_open(str(path), "pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError):
        return []


def settle_options(model: str, options: dict[str, Any], weight_keys: list[str]) -> dict[str, Any]:
    """A stored run's model_options with each option whose default has changed pinned to the value the
    run was trained with. `video_norm` was "none" by default, and runs written by the library (pipeline,
    ablate) recorded only the options they set: such a run used "standardize" exactly when its weights
    hold the encoder's input statistics (`encoder.video_mean`)."""
    if "video_norm" in type(model_config(model)).model_fields and "video_norm" not in options:
        used = "standardize" if any(k.endswith("video_mean") for k in weight_keys) else "none"
        options = {**options, "video_norm": used}
    return options


def resolved_options(
    model: str, options: dict[str, Any], weight_keys: list[str] | None = None
) -> dict[str, Any]:
    """Every option of `model`: `options` over its defaults. For a stored run, pass the names of its
    weights: the options are settled first (`settle_options`), so a changed default cannot change them."""
    if weight_keys is not None:
        options = settle_options(model, options, weight_keys)
    return model_config(model, options).model_dump(mode="json")


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
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        problem = "nested too deeply" if isinstance(err, RecursionError) else err
        raise EmtmError(
            f"{config_path}: not readable JSON ({problem}); expected the run's config object"
        ) from None
    if not isinstance(raw, dict):
        raise EmtmError(
            f"{config_path}: expected a JSON object with 'train' and 'spec', got {type(raw).__name__}"
        )
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
    bad = {k: v for k, v in asdict(spec).items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise EmtmError(f"{config_path}: 'spec' sizes must be positive integers, got {bad}")
    vocab = Vocab.load(run_dir / "vocab.json")
    if (len(vocab), vocab.n_chars) != (spec.vocab_size, spec.n_chars):
        raise EmtmError(
            f"{run_dir / 'vocab.json'}: {len(vocab)} words and {vocab.n_chars} characters, but the spec in "
            f"{config_path} says {spec.vocab_size} and {spec.n_chars}; this vocabulary is not the run's"
        )
    try:
        options = settle_options(cfg.model, cfg.model_options, weight_names(run_dir / weights))
        cfg = cfg.model_copy(update={"model_options": options})
        model = build_model(cfg.model, model_config(cfg.model, options), spec.to_spec())
    except ConfigError as err:  # an unknown model or options its config refuses
        raise ConfigError(f"{config_path}: {err}") from None
    except (RuntimeError, ValueError, AssertionError, ZeroDivisionError) as err:  # options no layer accepts
        raise EmtmError(
            f"{config_path}: cannot build model {cfg.model!r} from 'train.model_options' "
            f"{cfg.model_options} and 'spec' ({err}); the file was edited or is damaged"
        ) from None
    try:
        load_weights(model, run_dir / weights)
    except RuntimeError as err:  # shapes that do not fit the architecture in config.json
        reason = str(err).strip().splitlines()[-1].strip()
        raise EmtmError(
            f"{run_dir / weights}: weights do not fit the model in config.json ({reason})"
        ) from None
    model.to(device).eval()
    return LoadedRun(run_dir, cfg, spec, vocab, model, raw)


def distilled_student(run: LoadedRun) -> LoadedRun:
    """The plain `student` inside a loaded, distilled EMTM run (in memory): no teacher branch, no KAU."""
    options = {
        k: v for k, v in run.cfg.model_options.items() if k in type(model_config("student")).model_fields
    }
    student_cfg = run.cfg.model_copy(update={"model": "student", "model_options": options, "teachers": []})
    student = build_model("student", model_config("student", options), run.spec.to_spec())
    student.load_state_dict(run.model.student_state_dict(), strict=True)
    device = next(iter(run.model.buffers())).device
    raw = {**run.raw, "train": student_cfg.model_dump(), "distilled_from": str(run.run_dir)}
    return LoadedRun(run.run_dir, student_cfg, run.spec, run.vocab, student.to(device).eval(), raw)


def export_student(run_dir: Path, out: Path | None = None) -> Path:
    """Write a plain `student` run (config, vocab, weights) from a distilled EMTM run: no teacher, no KAU.

    Every file is written atomically, the weights last, so an interrupted export never leaves a file
    half written, and a folder without model.safetensors is an unfinished export."""
    import shutil

    run = distilled_student(load_run(run_dir))
    out = out or run_dir / "student"
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, run.cfg, run.spec, {"distilled_from": str(run_dir)})
    for name in ("vocab.json", "metrics.json"):
        if (run_dir / name).exists():
            with atomic_path(out / name) as tmp:
                shutil.copyfile(run_dir / name, tmp)
    save_weights(run.model, out / "model.safetensors")
    return out


TRAIN_STATE_KEYS = ("epoch", "optimizer", "scheduler", "scaler")


def save_train_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write the resumable state as one file, atomically: a kill at any moment leaves the previous one."""
    with atomic_path(run_dir / "last_state.pt") as tmp:
        torch.save(state, tmp)


def load_train_state(run_dir: Path) -> dict[str, Any]:
    """The last complete checkpoint of a run; a damaged or foreign file is a clear EmtmError."""
    path = run_dir / "last_state.pt"
    if not path.exists():
        raise EmtmError(
            f"{run_dir}: nothing to resume (no last_state.pt: the run stopped before its first checkpoint); "
            "start it again without --resume"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means an unusable file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EmtmError(
            f"{path}: checkpoint cannot be read ({reason}); it is damaged or not an emtm training state. "
            "Delete it and start the run again without --resume"
        ) from None
    missing = [k for k in TRAIN_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise EmtmError(
            f"{path}: not an emtm training state (missing {missing}); delete it and start without --resume"
        )
    return state


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Python, NumPy, torch (and this CUDA device's) RNG states, in types torch.load(weights_only) accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(state["python"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
