"""The one config system: pydantic models loaded from YAML/JSON, validated once at the edge.

Layers, later wins: defaults < `--config FILE` < explicit flags < `--set key.path=value` overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emtm.errors import ConfigError

T = TypeVar("T", bound=BaseModel)
Format = Literal["charades_sta", "activitynet", "tacos", "jsonl"]


class DataConfig(BaseModel):
    """One dataset, as described by a data.yaml. Relative paths resolve against the yaml's folder.

    Only what a command uses is required: `emtm evaluate --preds` reads the split it scores (and the
    durations of charades_sta), so a test-only data.yaml without `features:` serves it; training
    needs a `train` split and every command that reads features needs `features:` (`require`).
    """

    model_config = ConfigDict(extra="allow")

    format: Format
    splits: dict[str, str] = Field(min_length=1)
    features: str | None = None
    durations: str | list[str] | None = Field(
        None, description="charades_sta: a file, or a list (e.g. Charades_v1_train.csv, Charades_v1_test.csv)"
    )
    word_vectors: str = "glove-6b-50d"
    max_video_len: int = Field(64, ge=1)
    max_query_len: int = Field(30, ge=1)
    max_word_chars: int = Field(16, ge=1)
    skip_missing_videos: bool = False
    val_fraction: float = Field(0.1, gt=0, lt=1)
    root: str = "."
    source: str = Field("data.yaml", exclude=True, description="the file it was read from, for messages")

    @field_validator("durations")
    @classmethod
    def _some_durations(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not value:
            raise ValueError("an empty list; give a file, or a list of files, or leave the key out")
        return value

    def resolve(self, value: str | None) -> Path | None:
        """A path from the yaml, resolved against its folder. Named word vectors stay names."""
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path(self.root) / path).resolve()

    def duration_paths(self) -> Path | list[Path] | None:
        """`durations:` resolved: None, one path, or a list of paths."""
        if isinstance(self.durations, list):
            return [self.resolve(p) for p in self.durations]
        return self.resolve(self.durations)

    def features_path(self) -> Path:
        """`features:` resolved; a ConfigError when data.yaml has none (only evaluation can do without)."""
        if self.features is None:
            raise ConfigError(
                f"{self.source}: no `features:`, and this command reads features: set it to a folder of "
                "{video_id}.npy files or an .h5 file (`emtm evaluate --preds` alone needs none)"
            )
        return self.resolve(self.features)

    def require_split(self, split: str, why: str) -> None:
        """A ConfigError unless data.yaml names `split` (e.g. training needs 'train')."""
        if split not in self.splits:
            raise ConfigError(
                f"{self.source}: no {split!r} split, and {why}; it has: {', '.join(self.splits)} "
                "(e.g. splits: {train: train.txt, test: test.txt})"
            )

    def split_path(self, split: str) -> Path:
        if split not in self.splits:
            raise ConfigError(
                f"split {split!r} is not in data.yaml (it has: {', '.join(self.splits)}; "
                f"data.yaml folder: {self.root})"
            )
        return self.resolve(self.splits[split])

    def word_vector_spec(self) -> str:
        candidate = self.resolve(self.word_vectors)
        return str(candidate) if candidate is not None and candidate.exists() else self.word_vectors


def load_data_config(path: str | Path) -> DataConfig:
    path = Path(path)
    raw = read_mapping(path)
    raw.setdefault("root", str(path.resolve().parent))
    raw.setdefault("source", str(path))
    return validate(DataConfig, raw, str(path))


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    clip_grad: float = Field(1.0, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(5, ge=1)
    nms_iou: float | None = Field(0.5, gt=0, le=1)
    max_moment_len: int | None = Field(None, ge=1, description="longest predicted moment, in clips")
    protocol: Literal["raw", "quantized"] = "raw"
    select_metric: str = "r1@0.7"


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    val_seed: int | None = Field(
        None,
        description="seed of the validation hold-out of the train videos, when data.yaml has no val split "
        "(None: `seed`); a distilled student takes its teachers' (from their caches), so that none of "
        "its validation queries was seen by a teacher",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    num_workers: int = Field(0, ge=0)
    progress: bool = True
    threads: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(
        0, ge=0, description="also checkpoint every N optimizer steps inside an epoch (0: at epoch ends only)"
    )
    dist_timeout_s: int = Field(
        1800, ge=1, description="torchrun runs: seconds a rank waits in a collective before failing"
    )


class TrainConfig(BaseModel):
    """Everything a training run needs. It is written, fully resolved, to the run's config.json."""

    model_config = ConfigDict(extra="forbid")

    data: str
    model: str = "student"
    model_options: dict[str, Any] = Field(default_factory=dict)
    teachers: list[str] = Field(default_factory=list, description="teacher caches (.h5) for distillation")
    kau_teachers: list[str] = Field(
        default_factory=list,
        description="cross-fitting: the same teachers' out-of-fold caches, in the same order; the KAU "
        "learns its weights on them while the KD targets stay the in-sample `teachers`",
    )
    fold: tuple[int, int] | None = Field(
        None, description="(i, k): train without the videos of fold i of k (out-of-fold teacher caches)"
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @property
    def holdout_seed(self) -> int:
        """The seed that picks the validation videos held out of train."""
        return self.run.seed if self.run.val_seed is None else self.run.val_seed

    @model_validator(mode="after")
    def _kau_teachers_pair(self) -> TrainConfig:
        if self.kau_teachers and len(self.kau_teachers) != len(self.teachers):
            raise ValueError(
                f"kau_teachers ({len(self.kau_teachers)}) must pair with teachers ({len(self.teachers)}): "
                "the out-of-fold cache of each teacher, in the same order"
            )
        return self

    @field_validator("fold")
    @classmethod
    def _fold_in_range(cls, fold: tuple[int, int] | None) -> tuple[int, int] | None:
        if fold is not None and not (fold[1] >= 2 and 0 <= fold[0] < fold[1]):
            raise ValueError(f"must be (i, k) with k >= 2 and 0 <= i < k, e.g. (0, 5); got {fold}")
        return fold


def read_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON file that must hold a mapping; errors name the file."""
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:  # before ValueError, its base class
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {err.start}); save it as UTF-8") from None
    except (yaml.YAMLError, ValueError) as err:  # PyYAML raises ValueError for a bad \U escape
        raise ConfigError(f"{path}: not valid YAML/JSON ({err})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err}); expected a YAML/JSON file") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML/JSON (lists/mappings nested too deeply)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(raw).__name__}")
    return raw


def validate(cls: type[T], raw: dict[str, Any], source: str) -> T:
    try:
        return cls.model_validate(raw)  # not cls(**raw): keys may be non-strings, raw may be no mapping
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{source}: {problems}") from None


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], flag: str = "--set", example: str = "optim.lr=1e-3"
) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (value parsed as YAML) onto a nested dict."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} {example}")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{flag} {item!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError) as err:
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML ({err})") from None
    return raw
