"""Out-of-fold teacher caches: `emtm train --fold i/k` leaves fold i of the train videos out, and
`emtm teachers export --run RUN0 ... RUNk-1` caches each train query from the run that did not see it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from emtm.cli import main
from emtm.config import TrainConfig, load_data_config
from emtm.data.dataset import in_fold, prepare
from emtm.distill.cache import TeacherCache, check_compatible
from emtm.engine.checkpoint import load_run
from emtm.engine.teachers import export_teacher
from emtm.errors import ConfigError
from helpers import train_tiny_student

K = 2


@pytest.fixture(scope="module")
def train_samples(tiny_data: Path) -> list:
    return prepare(load_data_config(tiny_data), 0, ("train",)).splits["train"].samples


@pytest.fixture(scope="module")
def fold_runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("folds")
    return [train_tiny_student(tiny_data, out / f"fold{i}", fold=(i, K)) for i in range(K)]


def unfolded(run_dir: Path, out: Path) -> Path:
    """A copy of a fold run that forgets its fold, so it exports the whole train split."""
    shutil.copytree(run_dir, out)
    config = json.loads((out / "config.json").read_text())
    config["train"]["fold"] = None
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_folds_partition_the_videos_by_their_ids(train_samples: list) -> None:
    member = np.array([in_fold(train_samples, (i, 3)) for i in range(3)])
    assert (member.sum(0) == 1).all()  # every query in exactly one fold
    for i in range(3):  # whole videos, never split across folds, and folds of balanced size
        videos_in = {s.video_id for s, m in zip(train_samples, member[i]) if m}
        videos_out = {s.video_id for s, m in zip(train_samples, member[i]) if not m}
        assert not videos_in & videos_out
        n_videos = len({s.video_id for s in train_samples})
        assert abs(len(videos_in) - n_videos / 3) < 3 * (n_videos * 2 / 9) ** 0.5  # 3 binomial stds
    # a video's fold does not depend on the order or on the other videos
    assert member.tolist() == [in_fold(list(reversed(train_samples)), (i, 3))[::-1] for i in range(3)]
    assert member[:, :5].tolist() == [in_fold(train_samples[:5], (i, 3)) for i in range(3)]


def test_a_fold_run_trains_and_validates_without_its_fold(tiny_data: Path, train_samples: list) -> None:
    cfg = load_data_config(tiny_data)
    for seed in (0, 1):
        splits = prepare(cfg, seed, ("train", "val"), fold=(0, K)).splits
        fold_videos = {s.video_id for s, m in zip(train_samples, in_fold(train_samples, (0, K))) if m}
        seen = {s.video_id for name in ("train", "val") for s in splits[name].samples}
        assert seen and not seen & fold_videos
        assert seen | fold_videos == {s.video_id for s in train_samples}


def test_out_of_fold_export_takes_each_query_from_the_run_that_did_not_see_it(
    tiny_data: Path, fold_runs: list[Path], train_samples: list, tmp_path: Path
) -> None:
    assert [load_run(r).cfg.fold for r in fold_runs] == [(i, K) for i in range(K)]
    oof = export_teacher(fold_runs, tiny_data, "train", tmp_path / "oof.h5", progress=False)
    singles = [
        export_teacher(
            unfolded(r, tmp_path / f"run{i}"), tiny_data, "train", tmp_path / f"{i}.h5", progress=False
        )
        for i, r in enumerate(fold_runs)
    ]
    with TeacherCache(oof) as cache, TeacherCache(singles[0]) as run0, TeacherCache(singles[1]) as run1:
        assert cache.meta.folds == K and run0.meta.folds == 0
        assert sorted(cache.sample_ids()) == sorted(s.sample_id for s in train_samples)
        check_compatible(cache, tiny_data, "train")  # distillation accepts it like any train cache
        differ = 0
        for s, in_first in zip(train_samples, in_fold(train_samples, (0, K))):
            own, other = (run0, run1) if in_first else (run1, run0)
            np.testing.assert_allclose(cache.get(s.sample_id), own.get(s.sample_id), rtol=1e-5, atol=1e-7)
            differ += not np.allclose(cache.get(s.sample_id), other.get(s.sample_id))
        assert differ > len(train_samples) / 2  # the two runs are different teachers


def test_out_of_fold_export_refuses_an_incomplete_or_mixed_set(
    tiny_data: Path, fold_runs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "x.h5"
    with pytest.raises(ConfigError, match="folds 0/k to k-1/k"):
        export_teacher([fold_runs[0], fold_runs[0]], tiny_data, "train", out, progress=False)
    with pytest.raises(ConfigError, match="only as the out-of-fold cache of the train split"):
        export_teacher(fold_runs, tiny_data, "test", out, progress=False)
    assert not out.exists()
    # one fold run on its own exports the test split as usual, but not a partial train cache
    with TeacherCache(export_teacher(fold_runs[1], tiny_data, "test", out, progress=False)) as cache:
        assert cache.meta.folds == 0 and cache.meta.split == "test"
    with pytest.raises(ConfigError, match="folds 0/k to k-1/k"):
        export_teacher(fold_runs[1], tiny_data, "train", tmp_path / "y.h5", progress=False)


def test_fold_options_are_checked(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="0 <= i < k"):
        TrainConfig(data=str(tiny_data), fold=(2, 2))
    for fold, message in (("2", "expected I/K"), ("2/2", "0 <= i < k")):
        assert main(["train", "--data", str(tiny_data), "--fold", fold, "--out", str(tmp_path / "r")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_exports_the_fold_runs_as_one_cache(
    tiny_data: Path, fold_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "oof.h5"
    args = ["teachers", "export", "--data", str(tiny_data), "--run", *map(str, fold_runs), "--out", str(out)]
    assert main(args) == 0
    assert f"{K} folds" in capsys.readouterr().out
    with TeacherCache(out) as cache:
        assert cache.meta.folds == K


def test_fold_runs_are_refused_on_train_queries_they_were_not_trained_on(
    fold_runs: list[Path], tmp_path: Path
) -> None:
    from dataclasses import replace

    from emtm.data import synth

    other = synth.generate(replace(synth.PRESETS["tiny"], seed=1), tmp_path / "other", progress=False)
    with pytest.raises(ConfigError, match="its fold is not held out of these train queries"):
        export_teacher(fold_runs, other, "train", tmp_path / "x.h5", progress=False)


def test_distill_cross_fits_the_kau_on_out_of_fold_caches(
    tiny_data: Path, fold_runs: list[Path], cache_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    oof = tmp_path / "oof.h5"
    assert (
        main(
            ["teachers", "export", "--data", str(tiny_data), "--run", *map(str, fold_runs), "--out", str(oof)]
        )
        == 0
    )
    run = tmp_path / "run"
    args = ["distill", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--device", "cpu"]
    args += ["--no-progress", "--set", "model_options.d=32", "--set", "model_options.n_heads=4"]
    assert main([*args, "--teachers", str(cache_path), "--kau-teachers", str(oof)]) == 0
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["kau_teachers"] == [str(oof.resolve())] and saved["teachers"] == [str(cache_path.resolve())]
    assert (
        main([*args, "--overwrite", "--teachers", str(cache_path), "--kau-teachers", str(oof), str(oof)]) == 2
    )
    assert "one out-of-fold cache per teacher" in capsys.readouterr().err
