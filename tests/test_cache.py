"""The teacher cache: export from a trained run, import of the four native formats, lazy reads, refusals."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from emtm.config import load_data_config
from emtm.data.annotations import annotation_hash
from emtm.data.dataset import GroundingDataset, collate, prepare
from emtm.data.grid import time_to_index
from emtm.data.records import Sample
from emtm.distill.cache import (
    CACHE_VERSION,
    TeacherCache,
    check_compatible,
    import_outputs,
)
from emtm.distill.unify import unify
from emtm.engine.checkpoint import load_run
from emtm.engine.teachers import export_teacher
from emtm.errors import DataError
from emtm.models.student import Student
from helpers import write_jsonl


def copy_data(tiny_data: Path, dest: Path) -> Path:
    shutil.copytree(tiny_data.parent, dest)
    return dest / tiny_data.name


def quantized_gt(sample: Sample, n: int) -> tuple[int, int]:
    return time_to_index(sample.start, sample.end, sample.duration, n)


# --------------------------------------------------------------------------------------------
# Export


def test_export_covers_every_sample_with_distributions_and_metadata(
    cache_path: Path, tiny_data: Path, teacher_run: Path, split: tuple[list[Sample], dict[str, int]]
) -> None:
    samples, lengths = split
    with TeacherCache(cache_path) as cache:
        assert len(cache) == len(samples) and sorted(cache.sample_ids()) == sorted(lengths)
        for sample in samples:
            assert sample.sample_id in cache
            dist = cache.get(sample.sample_id)
            assert dist.dtype == np.float32 and dist.shape == (2, lengths[sample.sample_id])
            assert (dist >= 0).all()
            np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-5)
        meta = cache.meta
        assert "nope" not in cache
        with pytest.raises(DataError, match="no teacher outputs for sample 'nope'"):
            cache.get("nope")
    assert meta.teacher == "student" and meta.output_form == meta.rule == "span"
    assert meta.split == "train" and meta.version == CACHE_VERSION and meta.max_video_len == 64
    assert meta.annotation_sha256 == annotation_hash(tiny_data.parent / "train.txt")
    assert Path(meta.source) == teacher_run.resolve() and Path(meta.dataset) == tiny_data.resolve()
    assert (meta.temperature, meta.sigma_frac, meta.map_reduce) == (1.0, 0.05, "sum")
    with h5py.File(cache_path, "r") as f:
        assert json.loads(f.attrs["meta"])["teacher"] == "student"
        first = samples[0].sample_id
        assert f["samples"][first].attrs["n"] == lengths[first]
    check_compatible(TeacherCache(cache_path), tiny_data, "train")  # the data it was built for


def test_entries_are_keyed_by_sample_id_not_position(
    cache_path: Path, teacher_run: Path, tiny_data: Path, split: tuple[list[Sample], dict[str, int]]
) -> None:
    samples, _ = split
    picked = [samples[7], samples[2], samples[-1]]  # out of order, in a batch of their own
    run = load_run(teacher_run)
    data_cfg = load_data_config(tiny_data)
    store = prepare(data_cfg, 0, ("train",)).store
    batch = collate([GroundingDataset(picked, store, run.vocab, data_cfg)[i] for i in range(3)])
    with torch.no_grad():
        native = run.model.teacher_outputs(run.model(batch), batch)
        start, end = unify("span", native, batch["video_mask"])
    cache = TeacherCache(cache_path)
    for i, sample in enumerate(picked):
        n = int(batch["video_mask"][i].sum())
        expected = torch.stack([start[i, :n], end[i, :n]]).numpy()
        np.testing.assert_allclose(cache.get(sample.sample_id), expected, atol=1e-5)


def test_cache_reopens_after_pickling(cache_path: Path) -> None:
    cache = TeacherCache(cache_path)
    first = cache.sample_ids()[0]
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.get(first), cache.get(first))
    cache.close()
    clone.close()


def test_export_onto_a_coarser_student_grid(teacher_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    data = copy_data(tiny_data, tmp_path / "data")
    data.write_text(data.read_text().replace("max_video_len: 64", "max_video_len: 16"))
    cache = TeacherCache(export_teacher(teacher_run, data, out=tmp_path / "c.h5", progress=False))
    assert cache.meta.max_video_len == 16
    for sample_id in cache.sample_ids()[:10]:
        dist = cache.get(sample_id)
        assert dist.shape == (2, 16)
        np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-5)
    check_compatible(cache, data, "train")
    with pytest.raises(DataError, match="max_video_len 16, not 64"):
        check_compatible(cache, tiny_data, "train")


def test_a_failed_export_leaves_no_file(
    teacher_run: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = Student.teacher_outputs

    def fail_after_first_batch(self: Student, outputs: dict, batch: dict) -> dict:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return original(self, outputs, batch)

    monkeypatch.setattr(Student, "teacher_outputs", fail_after_first_batch)
    out = tmp_path / "out" / "cache.h5"
    with pytest.raises(RuntimeError, match="boom"):
        export_teacher(teacher_run, tiny_data, out=out, batch_size=16, progress=False)
    assert len(calls) == 2
    assert not out.exists() and list(out.parent.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Compatibility


def test_mismatches_are_refused(cache_path: Path, tiny_data: Path, tmp_path: Path) -> None:
    cache = TeacherCache(cache_path)
    data = copy_data(tiny_data, tmp_path / "data")
    check_compatible(cache, data, "train")  # same content elsewhere is fine
    train_txt = data.parent / "train.txt"
    lines = train_txt.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("##", "##then ", 1)
    train_txt.write_text("".join(lines))
    with pytest.raises(DataError, match="annotation file .*sha256") as err:
        check_compatible(cache, data, "train")
    message = str(err.value)
    assert str(cache_path) in message and "emtm teachers export" in message
    with pytest.raises(DataError, match="split 'train', not 'test'"):
        check_compatible(cache, tiny_data, "test")
    with pytest.raises(DataError, match="max_video_len 64, not 32"):
        check_compatible(cache, tiny_data, "train", max_video_len=32)


def test_unknown_cache_version_is_refused(cache_path: Path, tiny_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "future.h5"
    shutil.copy(cache_path, path)
    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        f.attrs["meta"] = json.dumps({**meta, "version": 99})
    with pytest.raises(DataError, match="version 99"):
        check_compatible(TeacherCache(path), tiny_data, "train")


def test_not_a_cache_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        TeacherCache(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(DataError, match="not an emtm teacher cache"):
        TeacherCache(tmp_path / "other.h5")


# --------------------------------------------------------------------------------------------
# Import


def argmax(cache: TeacherCache, sample_id: str) -> tuple[int, int]:
    dist = cache.get(sample_id)
    return int(dist[0].argmax()), int(dist[1].argmax())


def test_import_span_on_the_same_and_a_finer_teacher_grid(
    tiny_data: Path, tmp_path: Path, split: tuple[list[Sample], dict[str, int]]
) -> None:
    samples, lengths = split
    width = 2 * max(lengths.values())
    start = np.full((len(samples), width), -5.0, dtype=np.float32)
    end = start.copy()
    teacher_len = np.zeros(len(samples), dtype=np.int64)
    for row, sample in enumerate(samples):
        n = lengths[sample.sample_id]
        s, e = quantized_gt(sample, n)
        if row % 2:  # the teacher's grid is twice as fine: span (s, e) is (2s, 2e + 1) there
            n, s, e = 2 * n, 2 * s, 2 * e + 1
        teacher_len[row] = n
        start[row, s] = end[row, e] = 5.0
    path = tmp_path / "span.npz"
    ids = np.array([s.sample_id for s in samples])
    np.savez(path, sample_ids=ids, start_logits=start, end_logits=end, lengths=teacher_len)
    cache = TeacherCache(import_outputs("span", path, tiny_data, "train", tmp_path / "c.h5"))
    assert cache.meta.teacher == "span" and cache.meta.output_form == "span"
    for sample in samples:
        dist = cache.get(sample.sample_id)
        assert dist.shape == (2, lengths[sample.sample_id])
        np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-5)
        assert argmax(cache, sample.sample_id) == quantized_gt(sample, lengths[sample.sample_id])
    check_compatible(cache, tiny_data, "train")


def test_import_2dmap(tiny_data: Path, tmp_path: Path, split: tuple[list[Sample], dict[str, int]]) -> None:
    samples, lengths = split
    n_map = 8
    scores = np.zeros((len(samples), n_map, n_map), dtype=np.float32)
    scores[:, 2, 5] = 1.0  # the moment [2/8, 6/8]
    path = tmp_path / "map.npz"
    np.savez(path, sample_ids=np.array([s.sample_id for s in samples]), scores=scores)
    cache = TeacherCache(
        import_outputs("2dmap", path, tiny_data, "train", tmp_path / "c.h5", teacher_name="tan")
    )
    assert cache.meta.teacher == "tan" and cache.meta.rule == "2dmap"
    for sample in samples:
        n = lengths[sample.sample_id]
        s, e = argmax(cache, sample.sample_id)
        assert abs(s / n - 2 / 8) <= 1 / n and abs((e + 1) / n - 6 / 8) <= 1 / n


def test_import_proposals_at_the_ground_truth(
    tiny_data: Path, tmp_path: Path, split: tuple[list[Sample], dict[str, int]]
) -> None:
    samples, lengths = split
    records = []
    for k, sample in enumerate(samples):
        n = lengths[sample.sample_id]
        s, e = quantized_gt(sample, n)
        window = [s * sample.duration / n, (e + 1) * sample.duration / n]
        if k % 2:  # Moment-DETR style [s, e, score], a weaker decoy first
            records.append(
                {"sample_id": sample.sample_id, "unit": "seconds", "windows": [[0, 1, 0.0], [*window, 0.9]]}
            )
        else:
            records.append(
                {"sample_id": sample.sample_id, "unit": "seconds", "windows": [window], "scores": [1]}
            )
    path = write_jsonl(tmp_path / "proposals.jsonl", records)
    cache = TeacherCache(import_outputs("proposals", path, tiny_data, "train", tmp_path / "c.h5"))
    for sample in samples:
        assert argmax(cache, sample.sample_id) == quantized_gt(sample, lengths[sample.sample_id])


def test_import_regression_in_fractions(
    tiny_data: Path, tmp_path: Path, split: tuple[list[Sample], dict[str, int]]
) -> None:
    samples, lengths = split
    records = []
    for sample in samples:
        n = lengths[sample.sample_id]
        s, e = quantized_gt(sample, n)
        records.append({"sample_id": sample.sample_id, "unit": "fraction", "window": [s / n, (e + 1) / n]})
    path = write_jsonl(tmp_path / "regression.jsonl", records[::-1])  # file order does not matter
    cache = TeacherCache(import_outputs("regression", path, tiny_data, "train", tmp_path / "c.h5"))
    for sample in samples:
        assert argmax(cache, sample.sample_id) == quantized_gt(sample, lengths[sample.sample_id])


def test_import_refuses_unknown_and_missing_ids_and_pickles(
    tiny_data: Path, tmp_path: Path, split: tuple[list[Sample], dict[str, int]]
) -> None:
    samples, _ = split
    out = tmp_path / "c.h5"
    good = [{"sample_id": s.sample_id, "unit": "fraction", "window": [0.1, 0.5]} for s in samples]
    path = write_jsonl(tmp_path / "r.jsonl", [*good[:3], {**good[0], "sample_id": "GHOST_1"}, *good[3:]])
    with pytest.raises(DataError, match=r"r\.jsonl, line 4: sample_id 'GHOST_1' is not in split 'train'"):
        import_outputs("regression", path, tiny_data, "train", out)

    path = write_jsonl(tmp_path / "partial.jsonl", good[:5])
    with pytest.raises(DataError, match=f"{len(samples) - 5} of {len(samples)} samples .* not in this file"):
        import_outputs("regression", path, tiny_data, "train", out)
    cache = TeacherCache(import_outputs("regression", path, tiny_data, "train", out, allow_missing=True))
    assert len(cache) == 5 and samples[5].sample_id not in cache

    ids = np.array([s.sample_id for s in samples[:2]] + ["GHOST_2"])
    np.savez(
        tmp_path / "ghost.npz", sample_ids=ids, start_logits=np.zeros((3, 4)), end_logits=np.zeros((3, 4))
    )
    with pytest.raises(DataError, match="row 2: sample_id 'GHOST_2' is not in split 'train'"):
        import_outputs("span", tmp_path / "ghost.npz", tiny_data, "train", out)

    objects = np.array([s.sample_id for s in samples], dtype=object)
    logits = np.zeros((len(samples), 4))
    np.savez(tmp_path / "pickled.npz", sample_ids=objects, start_logits=logits, end_logits=logits)
    with pytest.raises(DataError, match="need pickle"):
        import_outputs("span", tmp_path / "pickled.npz", tiny_data, "train", out)
    with pytest.raises(DataError, match="expects a .npz file"):
        import_outputs("span", path, tiny_data, "train", out)


def test_sample_ids_with_slashes_round_trip(tmp_path: Path) -> None:
    from emtm.distill.cache import CacheMeta, write_cache

    meta = CacheMeta(
        "t", "span", "src", "data.yaml", "train", "a.txt", "0" * 64, "span", 1.0, 0.05, "sum", 4, ""
    )
    ids = ["a/b", ".hidden", "50%", "plain_1"]
    rows = [np.full((2, k + 1), 1 / (k + 1), dtype=np.float32) for k in range(len(ids))]
    cache = TeacherCache(write_cache(tmp_path / "c.h5", meta, zip(ids, rows)))
    assert sorted(cache.sample_ids()) == sorted(ids)
    for sample_id, row in zip(ids, rows):
        np.testing.assert_array_equal(cache.get(sample_id), row)
