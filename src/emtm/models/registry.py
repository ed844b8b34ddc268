"""The one registry of models: a name maps to a model class and its config class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from emtm.errors import ConfigError
from emtm.models.base import DataSpec, GroundingModel, ModelConfig

MODELS: dict[str, type[GroundingModel]] = {}


def register(name: str) -> Callable[[type[GroundingModel]], type[GroundingModel]]:
    def wrap(cls: type[GroundingModel]) -> type[GroundingModel]:
        MODELS[name] = cls
        return cls

    return wrap


def _ensure_loaded() -> None:
    # Importing the modules registers their models.
    from emtm.models import baselines, bigru, eamat, proposals, regress, seqpan, student, tan2d  # noqa: F401


def model_names() -> list[str]:
    _ensure_loaded()
    return sorted(MODELS)


def model_config(name: str, options: dict[str, Any] | None = None) -> ModelConfig:
    """Validate a model's options against its config class; errors name the key."""
    _ensure_loaded()
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name].Config(**(options or {}))
    except ValidationError as err:
        problems = "; ".join(f"model.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid options for model {name!r}: {problems}") from None


def build_model(name: str, config: ModelConfig, spec: DataSpec) -> GroundingModel:
    _ensure_loaded()
    return MODELS[name](config, spec)
