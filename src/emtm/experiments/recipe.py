"""One command per benchmark (`emtm recipe`): teachers -> caches -> EMTM -> evaluation -> report.

The pipeline itself (resumable at every step, report in the paper's table layout) is
emtm.experiments.pipeline, shared with `make demo`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from emtm.config import OptimConfig, read_mapping, validate
from emtm.errors import EmtmError
from emtm.experiments.pipeline import Plan, Stage, run_pipeline
from emtm.io import atomic_open

RECIPES = ("charades-sta", "activitynet", "tacos")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str
    splits: dict[str, str]
    durations: str | None = None
    max_video_len: int
    max_query_len: int = 30
    teachers: list[str]
    temperature: float = 1.0
    student_options: dict[str, Any] = Field(default_factory=dict)
    teacher_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    teacher_folds: int = Field(0, ge=0, description="K >= 2: out-of-fold teacher caches from K fold runs")

    @field_validator("teacher_folds")
    @classmethod
    def _not_one(cls, k: int) -> int:
        if k == 1:
            raise ValueError("must be 0 (ordinary caches) or K >= 2 (out-of-fold caches from K fold runs)")
        return k


def load_recipe(name_or_path: str) -> Recipe:
    path = Path(name_or_path)
    if not path.exists():
        if name_or_path not in RECIPES:
            raise EmtmError(f"unknown recipe {name_or_path!r}: use one of {', '.join(RECIPES)} or a .yaml")
        path = Path(str(resources.files("emtm.experiments.recipes") / f"{name_or_path}.yaml"))
    return validate(Recipe, read_mapping(path), str(path))


def write_data_yaml(recipe: Recipe, annotations: Path, features: Path, word_vectors: str, out: Path) -> Path:
    data = {
        "format": recipe.format,
        "splits": {k: str((annotations / v).resolve()) for k, v in recipe.splits.items()},
        "features": str(features.resolve()),
        "word_vectors": word_vectors,
        "max_video_len": recipe.max_video_len,
        "max_query_len": recipe.max_query_len,
    }
    if recipe.durations:
        data["durations"] = str((annotations / recipe.durations).resolve())
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "data.yaml") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return out / "data.yaml"


def run_recipe(
    recipe: Recipe, annotations: Path, features: Path, word_vectors: str, out: Path, device: str = "auto"
) -> dict[str, Any]:
    data_yaml = write_data_yaml(recipe, annotations, features, word_vectors, out)
    plan = Plan(
        teachers={
            name: Stage(name, recipe.teacher_options.get(name, {}), recipe.optim) for name in recipe.teachers
        },
        student=Stage("student", recipe.student_options, recipe.optim),
        temperature=recipe.temperature,
        teacher_folds=recipe.teacher_folds,
    )
    report = run_pipeline(plan, data_yaml, out, device)
    print((out / "report.md").read_text())
    return report
