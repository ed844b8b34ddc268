"""The model registry: a plain table of name -> "module:Class", every model (emtm included) entered the
same way, resolved on lookup, so the registry imports no model module and no model module imports it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emtm.errors import ConfigError
from emtm.models.base import GroundingModel, ModelConfig
from emtm.models.registry import MODELS, model_class, model_config, model_names


def test_every_entry_names_its_module_and_class() -> None:
    assert model_names() == sorted(MODELS)
    assert {"student", "prior", "meanpool", "bigru", "seqpan", "eamat", "tan2d", "proposals"} <= set(MODELS)
    assert {"regress", "emtm"} <= set(MODELS)
    for name, path in MODELS.items():
        cls = model_class(name)
        assert issubclass(cls, GroundingModel)
        assert f"{cls.__module__}:{cls.__qualname__}" == path
        assert issubclass(cls.Config, ModelConfig)


def test_an_unknown_model_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; choose one of: bigru, eamat, emtm, "):
        model_config("nope")
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_class("nope")


def test_the_registry_imports_no_model_until_a_lookup() -> None:
    code = (
        "import sys; import emtm.models.registry as r; "
        "loaded = [m for m in sys.modules if m.startswith(('emtm.models.', 'emtm.distill'))]; "
        "assert sorted(loaded) == ['emtm.models.base', 'emtm.models.registry'], loaded; "
        "r.model_config('emtm', {'n_teachers': 2}); assert 'emtm.distill.model' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
