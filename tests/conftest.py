from __future__ import annotations

from pathlib import Path

import pytest

from emtm.data import synth

REPO = Path(__file__).resolve().parents[1]
SHARED_ANNOTATIONS = REPO.parent / "shared" / "data" / "annotations"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic benchmark, written once per test session; returns its data.yaml."""
    return synth.generate(synth.PRESETS["tiny"], tmp_path_factory.mktemp("tiny"), progress=False)
