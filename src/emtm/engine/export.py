"""`emtm export`: a run's self-contained model folder (weights, vocabulary, config.json with each file's
size and sha256, and a model card); the format and its loader are `emtm.engine.model_dir`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from emtm.config import TrainConfig, load_data_config, validate
from emtm.data.text import Vocab
from emtm.engine.checkpoint import LoadedRun, SpecInfo, save_weights
from emtm.engine.model_dir import (
    CARD,
    CONFIG,
    METRIC_KEYS,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    TOKENIZER,
    VOCAB,
    WEIGHTS,
    ModelFile,
    file_sha256,
    is_model_dir,
    load_model,
    read_json,
)
from emtm.errors import EmtmError
from emtm.io import atomic_open, write_json, write_markdown_table
from emtm.models.registry import build_model, model_config
from emtm.version import __version__


# ---------------------------------------------------------------------------------------------- describe
def describe(run: LoadedRun, test_metrics: str | Path | None = None) -> dict[str, Any]:
    """The config.json of `run` as a model folder (without the `files` section)."""
    if isinstance(run.raw, dict) and run.raw.get("format") == MODEL_FORMAT:
        return {k: v for k, v in run.raw.items() if k != "files"}
    data_info = data_description(run.cfg.data)
    spec = run.spec
    features = {
        "video_dim": spec.video_dim,
        "max_video_len": spec.max_video_len,
        "pooling": "mean over equal bins when T > max_video_len (emtm.data.features.resample_features)",
        "clip_seconds": None,
        "fps": None,
        "backbone": None,
        **data_info.pop("features"),
    }
    word_vectors = data_info.pop("word_vectors")
    text = {
        "tokenizer": TOKENIZER,
        "word_vectors": word_vectors,
        "word_dim": spec.word_dim,
        "vocab_size": spec.vocab_size,
        "n_chars": spec.n_chars,
        "max_query_len": spec.max_query_len,
        "max_word_chars": spec.max_word_chars,
    }
    training = {
        **data_info,
        "seed": run.cfg.run.seed,
        "epochs": run.cfg.optim.epochs,
        "distilled_from": Path(run.raw["distilled_from"]).name if run.raw.get("distilled_from") else None,
    }
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "emtm_version": __version__,
        "architecture": {
            "name": run.cfg.model,
            "options": model_config(run.cfg.model, run.cfg.model_options).model_dump(),
            "n_trainable": int(run.model.n_trainable),
        },
        "decoding": {k: getattr(run.cfg.eval, k) for k in ("top_k", "nms_iou", "max_moment_len")},
        "features": features,
        "text": text,
        "training": training,
        "metrics": run_metrics(run.run_dir, test_metrics),
    }


def data_description(data_yaml: str) -> dict[str, Any]:
    """What the training data.yaml says about the data: name, annotations, feature and text specs.

    Clip seconds, fps and backbone come from data.yaml keys `clip_seconds`, `fps`, `backbone`, else
    from a `features.json` in the features folder (or beside the .h5 file); the synthetic benchmark
    has one feature row per second. Everything is None when data.yaml is not readable here.
    """
    info: dict[str, Any] = {
        "features": {},
        "word_vectors": "unknown",
        "dataset": None,
        "format": None,
        "annotations": {},
    }
    if not data_yaml or not Path(data_yaml).is_file():
        return info
    try:
        cfg = load_data_config(data_yaml)
    except (EmtmError, OSError, UnicodeDecodeError):
        return info
    extra = dict(cfg.model_extra or {})
    synth = extra.get("synth") if isinstance(extra.get("synth"), dict) else None
    features: dict[str, Any] = {}
    if synth is not None:
        features.update(clip_seconds=1.0, backbone="synthetic (emtm synth)")
    feature_path = cfg.resolve(cfg.features) if cfg.features else None
    sidecar = None
    if feature_path is not None:
        sidecar = (feature_path if feature_path.is_dir() else feature_path.parent) / "features.json"
    if sidecar is not None and sidecar.is_file():
        try:
            recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = {}
        features.update({k: recorded[k] for k in ("clip_seconds", "fps", "backbone") if k in recorded})
    features.update({k: extra[k] for k in ("clip_seconds", "fps", "backbone") if k in extra})
    for key in ("clip_seconds", "fps"):
        value = features.get(key)
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            features.pop(key)
    if "backbone" in features:
        features["backbone"] = str(features["backbone"])
    name = extra.get("name")
    if name is None and synth is not None:
        name = (
            f"synth-{synth['preset']}"
            if "preset" in synth
            else f"synth features for {cfg.format} annotations"
        )
    if name is None:
        name = Path(cfg.root).name
    annotations = {}
    for split, file in cfg.splits.items():
        path = cfg.resolve(file)
        if path.is_file():
            annotations[split] = {"file": path.name, "sha256": file_sha256(path)}
    vectors = cfg.word_vectors
    if vectors != "glove-6b-50d":
        vectors = Path(vectors).name  # a local file: its name only; its rows are in the weights
    return {
        "features": features,
        "word_vectors": vectors,
        "dataset": str(name),
        "format": cfg.format,
        "annotations": annotations,
    }


def run_metrics(run_dir: Path, test_metrics: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Validation (best epoch, metrics.json) and test metrics (`test_metrics`, else run_dir/test.json)."""
    out: dict[str, dict[str, Any]] = {}
    history = run_dir / "metrics.json"
    if history.is_file():
        best = (read_json(history) or {}).get("best")
        if isinstance(best, dict):
            out["val"] = {k: best[k] for k in METRIC_KEYS if k in best} | {"epoch": best.get("epoch", 0)}
    test_path = Path(test_metrics) if test_metrics else run_dir / "test.json"
    if test_metrics and not test_path.is_file():
        raise EmtmError(f"{test_path}: test metrics file not found (write it with emtm evaluate --json)")
    if test_path.is_file():
        test = read_json(test_path)
        missing = [k for k in METRIC_KEYS if k not in test] if isinstance(test, dict) else list(METRIC_KEYS)
        if missing:
            raise EmtmError(f"{test_path}: not an `emtm evaluate --json` file (missing {missing})")
        out[str(test.get("split", "test"))] = {k: test[k] for k in METRIC_KEYS} | {
            "protocol": str(test.get("protocol", "raw"))
        }
    return out


# ---------------------------------------------------------------------------------------------- write
def export_model(run: str | Path, out: str | Path, test_metrics: str | Path | None = None) -> Path:
    """Write the model folder of a run (a distilled run: its student only) to `out`."""
    run_path, out = Path(run), Path(out)
    if is_model_dir(run_path):
        raise EmtmError(f"{run_path}: already an exported model folder; copy it instead")
    if (out / CONFIG).exists() and not is_model_dir(out):
        raise EmtmError(
            f"{out}: holds a config.json that is not an exported model (a run?); choose another --out"
        )
    loaded = load_model(run_path)
    return write_model_dir(loaded, out, describe(loaded, test_metrics))


def write_model_dir(run: LoadedRun, out: Path, config: dict[str, Any]) -> Path:
    """Write weights, vocabulary, config.json (with the files' size and sha256) and the card."""
    out.mkdir(parents=True, exist_ok=True)
    save_weights(run.model, out / WEIGHTS)
    run.vocab.save(out / VOCAB)
    config = {**config, "files": {}}
    for name in (WEIGHTS, VOCAB):
        config["files"][name] = {"bytes": (out / name).stat().st_size, "sha256": file_sha256(out / name)}
    validate(ModelFile, config, "exported config")  # what we write, we can read
    write_json(out / CONFIG, config)
    write_card(out, config)
    return out


def write_card(out: Path, config: dict[str, Any]) -> None:
    """README.md: what the model is, what it needs, how to use it, and its metrics table."""
    arch, feats, text, training = (config[k] for k in ("architecture", "features", "text", "training"))
    clip = f"{feats['clip_seconds']} s per clip" if feats.get("clip_seconds") else "clip length not recorded"
    backbone = feats.get("backbone") or "not recorded"
    annotations = ", ".join(
        f"{s}: `{a['file']}` (sha256 {a['sha256'][:12]})" for s, a in training["annotations"].items()
    )
    data = f"{training.get('dataset') or 'unknown'} ({training.get('format') or 'unknown format'})"
    lines = [
        f"# {out.name}: emtm {arch['name']} model",
        "",
        f"A temporal sentence grounding model exported by emtm {config['emtm_version']}: given a video's "
        "clip features and a sentence, it returns the start and end (seconds) of the moment the sentence "
        "describes.",
        "",
        f"- architecture: `{arch['name']}` {json.dumps(arch['options'])}, "
        f"{arch['n_trainable']:,} trainable parameters",
        f"- features: (T, {feats['video_dim']}) per video, {clip}, backbone {backbone}; videos longer "
        f"than {feats['max_video_len']} clips are mean-pooled to {feats['max_video_len']}",
        f"- text: {text['tokenizer']}, word vectors {text['word_vectors']} ({text['word_dim']}-d; the "
        f"{text['vocab_size']} vocabulary rows are in the weights), at most {text['max_query_len']} words",
        f"- trained on: {data}" + (f"; {annotations}" if annotations else ""),
    ]
    if training.get("distilled_from"):
        lines.append(f"- distilled with EMTM (run `{training['distilled_from']}`); only the student is here")
    lines += [
        "",
        "```python",
        "from emtm import Grounder",
        f'g = Grounder.load("{out.name}")',
        'g.ground(features, "a person opens the door", duration=31.2)',
        "```",
        "",
        "Files: `model.safetensors` (weights), `config.json` (all of the above, with each file's size and "
        "sha256), `vocab.json`. Loading never unpickles and checks every file.",
        "",
        "## Metrics (%)" if config["metrics"] else "No metrics were recorded in the run.",
    ]
    if not config["metrics"]:
        with atomic_open(out / CARD) as handle:
            handle.write("\n".join(lines) + "\n")
        return
    rows = [
        [
            f"{split} (best epoch {m['epoch']})" if "epoch" in m else split,
            *[m.get(k, "") for k in METRIC_KEYS],
        ]
        for split, m in config["metrics"].items()
    ]
    write_markdown_table(out / CARD, ["split", *METRIC_KEYS], rows, title="\n".join(lines))


def write_random_model(
    out: str | Path,
    words: list[str],
    video_dim: int = 16,
    max_video_len: int = 32,
    d: int = 16,
    n_heads: int = 2,
    word_dim: int = 8,
    seed: int = 0,
) -> Path:
    """A valid model folder with random (untrained) weights, for examples and tests."""
    out = Path(out)
    vocab = Vocab.build([" ".join(words)])
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(len(vocab), word_dim, generator=generator)
    vectors[:2] = 0.0  # PAD and UNK
    spec = SpecInfo(video_dim, max_video_len, len(vocab), word_dim, vocab.n_chars)
    options = model_config("student", {"d": d, "n_heads": n_heads}).model_dump()
    cfg = TrainConfig(data="", model="student", model_options=options)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model("student", model_config("student", options), spec.to_spec(vectors)).eval()
    run = LoadedRun(out, cfg, spec, vocab, model, {})
    config = describe(run)
    config["training"].update(dataset="none (random weights)", epochs=0)
    config["text"]["word_vectors"] = "random"
    return write_model_dir(run, out, config)
