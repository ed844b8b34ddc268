"""Numbers out of range are errors naming the flag or field, never silent defaults or NaN output."""

from __future__ import annotations

import pytest

from emtm.cli import main

TRAIN = ["train", "--data", "d.yaml", "--out", "o"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*TRAIN, "--epochs", "0"], "argument --epochs: '0': expected an integer >= 1"),
        ([*TRAIN, "--lr", "nan"], "argument --lr: 'nan': expected a finite number"),
        ([*TRAIN, "--lr", "-0.001"], "argument --lr: '-0.001': expected a number > 0"),
        ([*TRAIN, "--seed", "-1"], "argument --seed: '-1': expected an integer >= 0"),
        (["predict", "--run", "r", "--query", "q", "--top-k", "0"], "argument --top-k: '0'"),
        (["synth", "--preset", "tiny", "--feature-dim", "0", "--out", "o"], "argument --feature-dim: '0'"),
        (["ablate", "--data", "d", "--teachers", "t", "--seeds", "0"], "argument --seeds: '0'"),
        ([*TRAIN, "--batch-size", "three"], "'three' is not an integer"),
    ],
)  # fmt: skip
def test_out_of_range_numbers_are_refused(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
