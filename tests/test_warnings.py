"""Warnings, once and clearly: repeated queries, queries the vocabulary cannot read, doubled or missing
teacher caches."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from emtm.data.dataset import SplitData, warn_duplicates, warn_unknown_queries
from emtm.data.records import Sample
from emtm.data.text import Vocab


def sample(i: int, sentence: str, start: float = 1.0) -> Sample:
    return Sample(f"q{i}", "v1", 30.0, start, start + 5.0, sentence)


def test_repeated_queries_are_warned_about_once(caplog) -> None:
    samples = [
        sample(0, "A person sits."),
        sample(1, "a person  sits."),
        sample(2, "a person sits.", start=9.0),
    ]
    with caplog.at_level(logging.WARNING, logger="emtm.data"):
        warn_duplicates(SplitData(samples, source="train.txt"), "train")
    assert len(caplog.records) == 1
    assert "1 queries repeat an earlier one" in caplog.text and "['q1']" in caplog.text


def test_queries_without_a_known_word_are_warned_about(caplog) -> None:
    vocab = Vocab(["<pad>", "<unk>", "person", "sits"], ["<pad>", "<unk>"])
    samples = [sample(0, "a person sits"), sample(1, "une personne assise"), sample(2, "人が座る")]
    with caplog.at_level(logging.WARNING, logger="emtm.data"):
        warn_unknown_queries(samples, vocab)
    assert len(caplog.records) == 1 and "2 of 3 queries have no word in the model's vocabulary" in caplog.text


@pytest.mark.parametrize("teachers", [[], ["CACHE", "CACHE"]])
def test_distill_warns_about_missing_or_doubled_caches(
    teachers: list[str], cache_path: Path, tiny_data: Path, tmp_path: Path, caplog
) -> None:
    from emtm.cli import main

    argv = ["distill", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "1"]
    argv += [
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        "model_options.d=32",
        "--set",
        "model_options.n_heads=4",
    ]
    if teachers:
        argv += ["--teachers", *[str(cache_path) for _ in teachers]]
    with caplog.at_level(logging.WARNING, logger="emtm"):
        assert main(argv) == 0
    expected = "the same teacher cache is given twice" if teachers else "emtm distill without --teachers"
    assert expected in caplog.text


def test_durations_that_disagree_with_extracted_features_are_warned_about(caplog) -> None:
    from emtm.data.dataset import warn_duration_mismatch

    extracted = {"clip_seconds": 1.0, "videos": {"v1": {"clips": 30}, "v2": {"clips": 12}}}
    samples = [sample(0, "a"), Sample("q1", "v2", 30.0, 1.0, 5.0, "b")]  # v2: 12 clips of 1 s, not 30 s
    with caplog.at_level(logging.WARNING, logger="emtm.data"):
        warn_duration_mismatch(SplitData(samples), "train", extracted)
    assert len(caplog.records) == 1 and "1 video(s)" in caplog.text
    assert "v2 (30 s annotated, 12 clips" in caplog.text
