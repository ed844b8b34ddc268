"""The options `emtm train` and `emtm distill` share, and the config they make (new, or resumed)."""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emtm.cli.argtypes import nonneg_int, positive_float, positive_int
from emtm.errors import EmtmError

log = logging.getLogger("emtm")

if TYPE_CHECKING:
    from emtm.config import TrainConfig


def add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data.yaml describing the dataset")
    p.add_argument(
        "--model",
        default=None,
        help="student (default), the baselines prior, meanpool and bigru, "
        "or a teacher: seqpan, eamat, tan2d, proposals, regress",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--config", help="YAML/JSON file with a TrainConfig (sections model_options, optim, eval, run)"
    )
    p.add_argument("--epochs", type=positive_int, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, help="queries per batch")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (AdamW)")
    p.add_argument("--seed", type=nonneg_int, help="random seed (data order, init, dropout, val hold-out)")
    p.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], help="where to train (auto: CUDA if available)"
    )
    p.add_argument("--workers", type=nonneg_int, help="data-loader worker processes")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last complete checkpoint (end of an epoch, every "
        "run.checkpoint_every steps, or where SIGINT/SIGTERM stopped it); its saved settings hold, and "
        "a flag that contradicts them is an error",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (without it, trained work there is never overwritten)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value, e.g. --set optim.warmup_epochs=2 --set model_options.d=64",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    from emtm.config import TrainConfig, apply_overrides, read_mapping, validate

    raw: dict[str, Any] = read_mapping(Path(args.config)) if args.config else {}
    raw["data"] = str(Path(args.data).resolve())
    if args.model:
        raw["model"] = args.model
    flags = {
        "optim.epochs": args.epochs,
        "optim.batch_size": args.batch_size,
        "optim.lr": args.lr,
        "run.seed": args.seed,
        "run.device": args.device,
        "run.num_workers": args.workers,
    }
    for key, value in flags.items():
        if value is not None:
            section, name = key.split(".")
            raw.setdefault(section, {})[name] = value
    if args.no_progress:
        raw.setdefault("run", {})["progress"] = False
    if getattr(args, "fold", None):
        raw["fold"] = parse_fold(args.fold)
    raw = apply_overrides(raw, args.set)
    cfg = validate(TrainConfig, raw, "training config")
    from emtm.models.registry import model_config

    cfg.model_options = model_config(cfg.model, cfg.model_options).model_dump()
    return cfg


def parse_fold(text: str) -> tuple[int, int]:
    """--fold I/K as (I, K); the range is checked by TrainConfig."""
    index, sep, k = text.partition("/")
    if not (sep and index.strip().isdigit() and k.strip().isdigit()):
        raise EmtmError(
            f"--fold {text!r}: expected I/K, the fold to leave out and the number of folds, e.g. 0/5"
        )
    return int(index), int(k)


def run_config(args: argparse.Namespace) -> TrainConfig:
    """The config of a new run (from the options), or of the run being resumed (from its config.json)."""
    from emtm.config import TrainConfig, validate
    from emtm.io import read_json

    if not args.resume:
        return train_config_from_args(args)
    config_path = Path(args.out) / "config.json"
    if not config_path.exists():
        if (Path(args.out) / "last_state.pt").exists():
            raise EmtmError(
                f"--resume: {args.out} holds last_state.pt but no config.json (written when a run starts), "
                "so its settings are unknown; start the run again without --resume in an empty folder"
            )
        raise EmtmError(f"--resume: {config_path} not found; nothing to resume in {args.out}")
    saved = validate(TrainConfig, read_json(config_path)["train"], str(config_path))
    differences = resume_differences(args, saved)
    if differences:
        raise EmtmError(
            f"--resume continues {args.out} with the settings it was started with ({config_path}), but "
            f"these flags say otherwise: {'; '.join(differences)}. Drop them to resume, or start a new "
            "run with --overwrite or another --out"
        )
    return saved


# Settings a resumed run may change: where and how it runs, not what it trains.
RESUMABLE_RUN_FIELDS = ("device", "num_workers", "progress", "threads", "checkpoint_every", "dist_timeout_s")


def resume_differences(args: argparse.Namespace, saved: Any) -> list[str]:
    """The flags of a --resume command line that contradict the saved config, as 'key: saved X, given Y'."""
    from emtm.config import apply_overrides, read_mapping

    before = saved.model_dump(mode="json")
    after = copy.deepcopy(before)
    if getattr(args, "data", None):
        after["data"] = str(Path(args.data).resolve())
    if getattr(args, "model", None):
        after["model"] = args.model
    if getattr(args, "config", None):
        for section, values in read_mapping(Path(args.config)).items():
            if isinstance(values, dict) and isinstance(after.get(section), dict):
                after[section].update(values)
            else:
                after[section] = values
    flags = {"optim.epochs": args.epochs, "optim.batch_size": args.batch_size, "optim.lr": args.lr,
             "run.seed": args.seed}  # fmt: skip
    for key, value in flags.items():
        if value is not None:
            section, name = key.split(".")
            after[section][name] = value
    after = apply_overrides(after, getattr(args, "set", []) or [])

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        return {k: v for key, value in d.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    old, new = flat(before), flat(after)
    return [
        f"{key.rstrip('.')}: saved {old.get(key)!r}, given {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and key.rstrip(".") not in {f"run.{f}" for f in RESUMABLE_RUN_FIELDS}
    ]
