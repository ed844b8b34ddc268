"""A distilled student holds out its teachers' validation videos: no teacher saw a validation query."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest

from emtm.config import TrainConfig, load_data_config
from emtm.data.dataset import prepare
from emtm.distill.cache import TeacherCache, teachers_holdout_seed
from emtm.engine.run_data import with_teachers_holdout


def val_ids(data: Path, seed: int) -> set[str]:
    splits = prepare(load_data_config(data), seed, ("train", "val")).splits
    return {s.sample_id for s in splits["val"].samples}


def with_meta(src: Path, dst: Path, **changes: object) -> str:
    """A copy of the cache `src` with its metadata fields changed."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        f.attrs["meta"] = json.dumps({**json.loads(f.attrs["meta"]), **changes})
    return str(dst)


def test_export_records_the_teachers_holdout(cache_path: Path, tiny_data: Path) -> None:
    assert TeacherCache(cache_path).meta.holdout_seed == 0  # the teacher run's seed
    assert val_ids(tiny_data, 0) != val_ids(tiny_data, 3)  # seeds do hold out different videos here


def test_a_distilled_student_takes_its_teachers_holdout(cache_path: Path, tiny_data: Path) -> None:
    cfg = TrainConfig(data=str(tiny_data), model="emtm", teachers=[str(cache_path)], run={"seed": 3})
    assert cfg.holdout_seed == 3
    resolved = with_teachers_holdout(cfg)
    assert resolved.run.val_seed == 0 and resolved.holdout_seed == 0 and resolved.run.seed == 3
    given = cfg.model_copy(update={"run": cfg.run.model_copy(update={"val_seed": 5})})
    assert with_teachers_holdout(given).holdout_seed == 5  # an explicit val_seed wins
    alone = TrainConfig(data=str(tiny_data), run={"seed": 3})
    assert with_teachers_holdout(alone).holdout_seed == 3  # no teachers, no constraint


def test_teachers_that_disagree_share_no_holdout(cache_path: Path, tmp_path: Path) -> None:
    other = with_meta(cache_path, tmp_path / "other.h5", holdout_seed=1)
    unknown = with_meta(cache_path, tmp_path / "unknown.h5", holdout_seed=None)
    out_of_fold = with_meta(cache_path, tmp_path / "oof.h5", holdout_seed=None, folds=5)
    assert teachers_holdout_seed([cache_path, cache_path]) == 0
    assert teachers_holdout_seed([cache_path, other]) is None
    assert teachers_holdout_seed([cache_path, unknown]) is None
    assert teachers_holdout_seed([cache_path, out_of_fold]) == 0  # every out-of-fold entry is held out


def test_ablation_spreads_its_seeds_over_teacher_sets(
    cache_path: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """Seed s is distilled from set s mod n, and every row of that seed holds out that set's videos."""
    from emtm.errors import EmtmError
    from emtm.experiments.ablate import run_ablation

    (tmp_path / "s1").mkdir()
    second = with_meta(cache_path, tmp_path / "s1" / cache_path.name, holdout_seed=1)
    sets = [[str(cache_path)], [second]]
    out = tmp_path / "ablation"
    state, _ = run_ablation(
        tiny_data, sets, out, seeds=2, epochs=1, device="cpu", rows={1, 2}, progress=False,
        emtm_options={"d": 32, "n_heads": 4},
    )  # fmt: skip
    single = next(name for name in state["rows"] if name != "student alone")
    assert state["rows"][single]["teacher_set"] == {"0": 1, "1": 2}
    for seed, (teacher, holdout) in enumerate([(str(cache_path.resolve()), 0), (second, 1)]):
        distilled = json.loads((out / "student---cache" / f"seed{seed}" / "config.json").read_text())
        alone = json.loads((out / "student-alone" / f"seed{seed}" / "config.json").read_text())
        assert distilled["train"]["teachers"] == [str(Path(teacher).resolve())]
        assert distilled["train"]["run"]["val_seed"] == alone["train"]["run"]["val_seed"] == holdout
    misnamed = with_meta(cache_path, tmp_path / "other.h5")
    with pytest.raises(EmtmError, match=r"set 2 names the teachers \['other'\], set 1 \['cache'\]"):
        run_ablation(tiny_data, [[str(cache_path)], [misnamed]], tmp_path / "x", seeds=1, rows={1})
