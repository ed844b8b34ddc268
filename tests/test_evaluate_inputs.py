"""Files as users have them: a test-only data.yaml without features, and durations in several files
(the official Charades_v1_train.csv and Charades_v1_test.csv as distributed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from emtm.cli import main
from emtm.config import load_data_config
from emtm.data.annotations import load_durations, read_annotations
from emtm.errors import ConfigError, DataError

HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\r\n"
TRAIN_CSV = HEADER + (
    'AAA01,HR43,Kitchen,6,7,Yes,"A person cooks, then eats.",food;pan,'
    '"A person is cooking.\nThen, they eat.",c001 0.0 5.0;c002 4.0 9.0,30.5\r\n'
    "BBB02,HR44,Bedroom,5,7,Yes,A person sleeps.,bed,A person lies down.,,12.17\r\n"
)
TEST_CSV = HEADER + 'CCC03,HR45,Garage,7,6,Yes,A person opens a door.,door,"Opens a door, leaves.",,20.0\r\n'


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_the_official_charades_csvs_as_distributed(tmp_path: Path) -> None:
    """Quoted commas and line breaks, CRLF lines, unused columns: only id and length are read."""
    train, test = (
        write(tmp_path / "Charades_v1_train.csv", TRAIN_CSV),
        write(tmp_path / "Charades_v1_test.csv", TEST_CSV),
    )
    assert load_durations(train) == {"AAA01": 30.5, "BBB02": 12.17}
    assert load_durations([train, test]) == {"AAA01": 30.5, "BBB02": 12.17, "CCC03": 20.0}
    json_file = write(tmp_path / "more.json", json.dumps({"CCC03": 20.0, "DDD04": {"duration": 8.0}}))
    assert load_durations([test, json_file]) == {"CCC03": 20.0, "DDD04": 8.0}  # the same value twice is fine


def test_durations_files_that_disagree_are_an_error(tmp_path: Path) -> None:
    test = write(tmp_path / "Charades_v1_test.csv", TEST_CSV)
    other = write(tmp_path / "other.json", json.dumps({"CCC03": 21.0}))
    with pytest.raises(DataError, match=rf"{other}: video 'CCC03': duration 21 s, but {test} gives 20 s"):
        load_durations([test, other])


def test_data_yaml_takes_a_list_of_durations_files(tmp_path: Path) -> None:
    write(tmp_path / "Charades_v1_train.csv", TRAIN_CSV)
    write(tmp_path / "Charades_v1_test.csv", TEST_CSV)
    write(tmp_path / "test.txt", "AAA01 1.0 25.0##a person cooks.\nCCC03 2.0 24.0##a person opens a door.\n")
    data = {
        "format": "charades_sta",
        "splits": {"test": "test.txt"},
        "durations": ["Charades_v1_train.csv", "Charades_v1_test.csv"],
    }
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    cfg = load_data_config(tmp_path / "data.yaml")
    samples, report = read_annotations(cfg.split_path("test"), cfg.format, cfg.duration_paths())
    assert [(s.video_id, s.duration, s.end) for s in samples] == [
        ("AAA01", 30.5, 25.0),
        ("CCC03", 20.0, 20.0),
    ]
    assert report.n_ends_clipped == 1


def test_a_test_only_data_yaml_serves_evaluate_and_says_what_else_needs(tmp_path: Path, capsys) -> None:
    """No train split, no features: `emtm evaluate --preds` works; train and prepare say what is missing."""
    write(
        tmp_path / "test.jsonl",
        '{"qid": 1, "query": "a", "vid": "v1", "duration": 30, "relevant_windows": [[0, 10]]}\n',
    )
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"format": "jsonl", "splits": {"test": "test.jsonl"}}))
    preds = write(tmp_path / "preds.jsonl", '{"qid": 1, "pred_relevant_windows": [[0, 8, 0.9]]}\n')
    out = tmp_path / "m.json"
    assert (
        main(["evaluate", "--preds", str(preds), "--data", str(tmp_path / "data.yaml"), "--json", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["miou"] == pytest.approx(80.0)
    capsys.readouterr()
    assert (
        main(
            ["train", "--data", str(tmp_path / "data.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]
        )
        == 2
    )
    assert "data.yaml: no 'train' split, and training needs one" in capsys.readouterr().err
    from emtm.data.dataset import prepare

    with pytest.raises(ConfigError, match=r"data.yaml: no `features:`, and this command reads features"):
        prepare(load_data_config(tmp_path / "data.yaml"), 0, ("test",))
