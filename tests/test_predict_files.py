"""Batch prediction files (Moment-DETR / Lighthouse layout) and the standalone evaluator on them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from emtm.cli import main
from emtm.config import load_data_config
from emtm.data.dataset import load_splits
from emtm.errors import EmtmError
from helpers import train_tiny_student


@pytest.fixture(scope="module")
def run_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch tiny student and its exported model folder (run_dir.parent / "model")."""
    out = train_tiny_student(tiny_data, tmp_path_factory.mktemp("preds") / "run", epochs=1)
    assert main(["export", "--run", str(out), "--out", str(out.parent / "model")]) == 0
    return out


@pytest.fixture(scope="module")
def preds(run_dir: Path, tiny_data: Path) -> Path:
    path = run_dir.parent / "preds.jsonl"
    args = ["predict", "--model", str(run_dir.parent / "model"), "--data", str(tiny_data)]
    assert main([*args, "--split", "test", "--out", str(path), "--no-progress"]) == 0
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def evaluate(args: list[str], tmp_path: Path, name: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["evaluate", *args, "--json", str(out), "--no-progress"]) == 0
    return json.loads(out.read_text())


METRICS = ("r1@0.3", "r1@0.5", "r1@0.7", "r5@0.3", "r5@0.5", "r5@0.7", "miou", "n_queries")


def test_the_file_has_one_line_per_query_in_the_moment_detr_layout(preds: Path, tiny_data: Path) -> None:
    samples = load_splits(load_data_config(tiny_data), 0, ("test",))["test"].samples
    records = read_lines(preds)
    assert [r["qid"] for r in records] == [s.sample_id for s in samples]
    for record, sample in zip(records, samples):
        assert set(record) == {"qid", "vid", "query", "pred_relevant_windows"}
        assert (record["vid"], record["query"]) == (sample.video_id, sample.sentence)
        windows = record["pred_relevant_windows"]
        assert 1 <= len(windows) <= 5 and all(len(w) == 3 for w in windows)
        assert all(0 <= s < e <= sample.duration + 1e-4 for s, e, _ in windows)
        assert [w[2] for w in windows] == sorted((w[2] for w in windows), reverse=True)
        assert len({(s, e) for s, e, _ in windows}) == len(windows)


@pytest.mark.parametrize("protocol", ["raw", "quantized"])
def test_scores_from_the_file_equal_scores_from_the_run(
    run_dir: Path, preds: Path, tiny_data: Path, tmp_path: Path, protocol: str
) -> None:
    common = ["--split", "test", "--protocol", protocol, "--breakdown"]
    direct = evaluate(["--run", str(run_dir), *common], tmp_path, "run")
    from_file = evaluate(["--preds", str(preds), "--data", str(tiny_data), *common], tmp_path, "file")
    assert direct["n_queries"] == len(read_lines(preds))
    for key in METRICS:
        assert from_file[key] == direct[key], key  # exactly
    assert from_file["breakdown"] == direct["breakdown"]
    assert 0 < direct["r5@0.3"] < 100  # a real, non-trivial score
    exported = evaluate(
        ["--run", str(run_dir.parent / "model"), "--data", str(tiny_data), *common], tmp_path, "m"
    )
    assert all(exported[key] == direct[key] for key in METRICS)


def test_the_same_table_is_printed(run_dir: Path, preds: Path, tiny_data: Path, capsys) -> None:
    assert main(["evaluate", "--run", str(run_dir), "--no-progress"]) == 0
    from_run = capsys.readouterr().out
    assert main(["evaluate", "--preds", str(preds), "--data", str(tiny_data)]) == 0
    from_file = capsys.readouterr().out
    body = lambda out: out.split("\n", 1)[1]  # noqa: E731 - all but the title line
    assert body(from_file) == body(from_run) and "preds.jsonl on test (raw protocol)" in from_file


def test_files_from_other_toolkits_integer_qids_and_no_scores(
    run_dir: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """A Lighthouse-style jsonl dataset with integer qids; a file with [start, end] windows only."""
    cfg = load_data_config(tiny_data)
    samples = load_splits(cfg, 0, ("train", "test"))
    data = tmp_path / "jsonl"
    data.mkdir()
    for split, split_data in samples.items():
        lines = [
            {"qid": 1000 + i, "query": s.sentence, "vid": s.video_id, "duration": s.duration,
             "relevant_windows": [[s.start, s.end]]}
            for i, s in enumerate(split_data.samples)
        ]  # fmt: skip
        write_lines(data / f"{split}.jsonl", lines)
    yaml_path = data / "data.yaml"
    spec = {"format": "jsonl", "splits": {"train": "train.jsonl", "test": "test.jsonl"}}
    yaml_path.write_text(yaml.safe_dump({**spec, "features": str(cfg.resolve(cfg.features))}))
    path = tmp_path / "p.jsonl"
    args = ["predict", "--model", str(run_dir.parent / "model"), "--data", str(yaml_path), "--out", str(path)]
    assert main([*args, "--no-progress"]) == 0
    records = read_lines(path)
    assert records[0]["qid"] == 1000 and isinstance(records[0]["qid"], int)
    reference = evaluate(["--preds", str(path), "--data", str(yaml_path)], tmp_path, "int")
    other = [
        {"qid": str(r["qid"]), "pred_relevant_windows": [w[:2] for w in r["pred_relevant_windows"]]}
        for r in records
    ]  # string qids, no vid, no query, no scores
    write_lines(path, other[::-1])  # any order
    from_other = evaluate(["--preds", str(path), "--data", str(yaml_path)], tmp_path, "str")
    assert all(from_other[key] == reference[key] for key in METRICS)


def broken(records: list[dict]) -> dict[str, tuple[list, str]]:
    """Broken files (lines) and the message each gives; line numbers are 1-based."""
    first, rest, last = records[0], records[1:], len(records) + 1

    def first_as(**changes) -> list:
        return [{**first, **changes}, *rest]

    return {
        "missing": (rest, r"1 of the \d+ queries of split 'test' of .*data.yaml have no prediction"),
        "extra": ([*records, {**first, "qid": "NOPE_0"}], rf", line {last}: qid 'NOPE_0' is not"),
        "duplicate": ([*records, first], rf", line {last}: qid '{first['qid']}' again \(first on line 1\)"),
        "bad json": (["{not json", *rest], r", line 1: invalid JSON"),
        "no windows": (first_as(pred_relevant_windows=[]), r", line 1: 'pred_relevant_windows' must"),
        "end before start": (
            first_as(pred_relevant_windows=[[5.0, 2.0, 0.1]]),
            r", line 1: .*window 0 is \[5.0, 2.0, 0.1\]",
        ),
        "wrong video": (first_as(vid="OTHER"), r", line 1: qid .* says 'OTHER'"),
        "bool qid": (first_as(qid=True), r", line 1: 'qid' must be an integer or a string"),
        "no qid": ([{"pred_relevant_windows": [[0, 1]]}, *rest], r", line 1: missing key 'qid'"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "extra", "duplicate", "bad json", "no windows", "end before start", "wrong video", "bool qid",
     "no qid"],
)  # fmt: skip
def test_broken_prediction_files_are_clear_errors(
    preds: Path, tiny_data: Path, tmp_path: Path, capsys, case: str
) -> None:
    lines, needle = broken(read_lines(preds))[case]
    path = write_lines(tmp_path / "bad.jsonl", lines)
    assert main(["evaluate", "--preds", str(path), "--data", str(tiny_data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"emtm evaluate: error: {path}")
    assert re.search(needle, err), err


def test_usage_errors(run_dir: Path, preds: Path, tiny_data: Path, capsys) -> None:
    assert main(["evaluate", "--run", str(run_dir), "--preds", str(preds)]) == 2
    assert "give one of --run" in capsys.readouterr().err
    assert main(["evaluate", "--preds", str(preds)]) == 2
    assert "--preds needs the ground truth: --data D.yaml (and --split) or --gt" in capsys.readouterr().err
    assert main(["evaluate", "--preds", str(preds), "--data", str(tiny_data), "--gt", str(preds)]) == 2
    assert "one of them" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(run_dir), "--gt", str(preds)]) == 2
    assert "--gt FILE.jsonl is the ground truth of a prediction file" in capsys.readouterr().err
    assert main(["predict", "--model", str(run_dir), "--data", str(tiny_data)]) == 2
    assert "--data needs --out" in capsys.readouterr().err
    assert main(["predict", "--model", str(run_dir)]) == 2
    assert "give --features" in capsys.readouterr().err
    assert main(["evaluate", "--preds", str(preds), "--data", str(tiny_data), "--split", "train"]) == 2
    assert "is not a query of split 'train'" in capsys.readouterr().err


def test_a_deeply_nested_line_is_a_clear_error(tmp_path: Path) -> None:
    from emtm.engine.predictions import _records
    from emtm.errors import DataError

    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    expected = r"deep.jsonl, line 1: invalid JSON \(arrays/objects nested too deeply\)"
    with pytest.raises(DataError, match=expected):
        list(_records(path))


def test_predict_with_reduced_precision(
    run_dir: Path, preds: Path, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    """--precision bf16 writes the same layout, with scores close to fp32's; fp16 needs CUDA."""
    path = tmp_path / "bf16.jsonl"
    args = ["predict", "--model", str(run_dir.parent / "model"), "--data", str(tiny_data), "--split", "test"]
    assert main([*args, "--out", str(path), "--precision", "bf16", "--device", "cpu", "--no-progress"]) == 0
    fast, exact = read_lines(path), read_lines(preds)
    assert [r["qid"] for r in fast] == [r["qid"] for r in exact]
    top = [(r["pred_relevant_windows"][0][2], e["pred_relevant_windows"][0][2]) for r, e in zip(fast, exact)]
    assert all(abs(a - b) <= 0.05 * b + 0.02 for a, b in top)
    assert fast != exact  # bf16 is not bit-exact
    cast = tmp_path / "cast.jsonl"  # the weights and features converted to bf16 once: close too
    assert (
        main([*args, "--out", str(cast), "--precision", "bf16", "--cast", "--device", "cpu", "--no-progress"])
        == 0
    )
    top = [
        (r["pred_relevant_windows"][0][2], e["pred_relevant_windows"][0][2])
        for r, e in zip(read_lines(cast), exact)
    ]
    assert len(top) == len(exact) and all(abs(a - b) <= 0.05 * b + 0.02 for a, b in top)
    capsys.readouterr()
    code = main([*args, "--out", str(tmp_path / "x.jsonl"), "--precision", "fp16", "--device", "cpu"])
    assert code == 2 and "fp16 needs a CUDA device" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "y.jsonl"), "--cast", "--device", "cpu"]) == 2
    assert "cast converts the weights to the precision" in capsys.readouterr().err


def test_precision_agreement_scores_each_precision_against_fp32(
    run_dir: Path, preds: Path, tiny_data: Path, tmp_path: Path, load_benchmark
) -> None:
    """benchmarks/precision_agreement.py: emtm predict at each precision, scored as emtm evaluate
    scores it, each top-1 compared with the fp32 reference."""
    script = load_benchmark("precision_agreement")
    model = str(run_dir.parent / "model")
    args = ["--model", model, "--data", str(tiny_data), "--variants", "fp32,bf16+cast", "--device", "cpu"]
    assert script.main([*args, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "precision_agreement.json").read_text())["variants"]
    fp32, cast = result["fp32"], result["bf16+cast"]
    assert read_lines(tmp_path / "preds_fp32.jsonl") == read_lines(preds)  # the same path as emtm predict
    assert fp32["same_top1"] == 1.0 and fp32["delta"]["r1@0.7"] == 0.0
    assert 0.0 <= cast["same_top1"] <= 1.0 and set(cast["metrics"]) >= {"r1@0.7", "miou"}
    assert cast["delta"]["miou"] == pytest.approx(cast["metrics"]["miou"] - fp32["metrics"]["miou"])
    assert "| bf16+cast |" in (tmp_path / "precision_agreement.md").read_text()
    with pytest.raises(EmtmError, match="variant 'fp8'"):
        script.predict_args("fp8", model, str(tiny_data), "test", tmp_path / "x.jsonl", "cpu", None)


def test_gpu_payload_packs_a_student_and_one_split_in_fp16(
    run_dir: Path, preds: Path, tiny_data: Path, tmp_path: Path, load_benchmark
) -> None:
    import numpy as np

    run_out, data_out = load_benchmark("gpu_payload").pack(
        run_dir.parent / "model", tiny_data, "test", tmp_path
    )
    videos = {p.stem for p in (data_out / "features").glob("*.npy")}
    assert videos == set(json.loads((data_out / "durations.json").read_text()))
    assert {np.load(data_out / "features" / f"{v}.npy").dtype for v in videos} == {np.dtype(np.float16)}
    assert (
        "word_vectors" not in (data_out / "data.yaml").read_text()
        and (run_out / "model.safetensors").exists()
    )
    out = tmp_path / "p.jsonl"  # the packed folder alone predicts every query of the split
    args = ["predict", "--model", str(run_out), "--data", str(data_out / "data.yaml"), "--split", "test"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert [r["qid"] for r in read_lines(out)] == [r["qid"] for r in read_lines(preds)]
