"""The one registry of models: a name maps to the import path of its model class (and so its config class).

Every model enters the same way, as a "module:Class" string in `MODELS`; the class is imported on lookup,
so this module imports no model module (and no layer above models, where the joint `emtm` model lives)
and the model modules never import it.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from emtm.errors import ConfigError
from emtm.models.base import DataSpec, GroundingModel, ModelConfig

MODELS: dict[str, str] = {
    "bigru": "emtm.models.bigru:BiGRU",
    "eamat": "emtm.models.eamat:EAMAT",
    "emtm": "emtm.distill.model:EMTM",
    "meanpool": "emtm.models.baselines:MeanPoolRegressor",
    "prior": "emtm.models.baselines:Prior",
    "proposals": "emtm.models.proposals:BoundaryProposals",
    "regress": "emtm.models.regress:Regressor",
    "seqpan": "emtm.models.seqpan:SeqPAN",
    "student": "emtm.models.student:Student",
    "tan2d": "emtm.models.tan2d:Tan2d",
}


def model_names() -> list[str]:
    return sorted(MODELS)


def model_class(name: str) -> type[GroundingModel]:
    """The model class registered under `name`; ConfigError for an unknown name."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    module, _, attr = MODELS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def model_config(name: str, options: dict[str, Any] | None = None) -> ModelConfig:
    """Validate a model's options against its config class; errors name the key."""
    cls = model_class(name)
    try:
        return cls.Config(**(options or {}))
    except ValidationError as err:
        problems = "; ".join(f"model.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid options for model {name!r}: {problems}") from None


def build_model(name: str, config: ModelConfig, spec: DataSpec) -> GroundingModel:
    return model_class(name)(config, spec)
