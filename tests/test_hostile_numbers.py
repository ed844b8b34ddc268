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


def test_huge_finite_features_are_refused_not_scored_nan(tmp_path) -> None:
    import numpy as np

    from emtm.data.features import open_feature_store
    from emtm.errors import DataError

    (tmp_path / "f").mkdir()
    np.save(tmp_path / "f" / "v1.npy", np.full((4, 8), 1e38, dtype=np.float32))
    np.save(tmp_path / "f" / "v2.npy", np.full((4, 8), 9999.0, dtype=np.float32))
    with pytest.raises(DataError, match=r"beyond \+/-10000 \(largest 1e\+38\)"):
        open_feature_store(tmp_path / "f").load("v1")
    (tmp_path / "f" / "v1.npy").unlink()
    assert open_feature_store(tmp_path / "f").load("v2").max() == 9999.0


def test_a_model_refuses_huge_features(teacher_run) -> None:
    import numpy as np

    from emtm.api import Grounder
    from emtm.errors import EmtmError

    grounder = Grounder.load(teacher_run, device="cpu")
    dim = grounder.run.spec.video_dim
    with pytest.raises(EmtmError, match="beyond 10000"):
        grounder.ground(np.full((10, dim), 1e38, dtype=np.float32), "a person sits", duration=10.0)


def test_nan_never_reaches_json(tmp_path) -> None:
    from emtm.errors import EmtmError
    from emtm.io import write_json

    with pytest.raises(EmtmError, match=r"rows\[1\]\.score is nan"):
        write_json(tmp_path / "m.json", {"rows": [{"score": 1.0}, {"score": float("nan")}]})
    assert not (tmp_path / "m.json").exists()
    write_json(tmp_path / "ok.json", {"ci": None, "score": 1.5})
    assert (tmp_path / "ok.json").read_text().startswith("{")


@pytest.mark.parametrize("flag", ["--out", "--json"])
def test_unwritable_outputs_fail_before_the_work(flag: str, tiny_data, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = str(blocker / ("run" if flag == "--out" else "m.json"))
    argv = ["train", "--data", str(tiny_data), "--out", target, "--epochs", "1"]
    if flag == "--json":
        argv = ["evaluate", "--preds", "p.jsonl", "--gt", "g.jsonl", "--json", target]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{flag} {target}: cannot write there" in err and "choose a writable path" in err


def test_the_page_url_brackets_an_ipv6_address() -> None:
    from emtm.cli.serve import page_url

    assert (
        page_url("::1", 8000) == "http://[::1]:8000/" and page_url("127.0.0.1", 80) == "http://127.0.0.1:80/"
    )
