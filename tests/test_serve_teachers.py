"""`emtm serve` over a distilled run: the "Teachers and KAU" view (GET /examples, GET /examples/{i}) gives a
training example's teachers' unified distributions (as cached), the KAU weights, their ensemble and the
student (as POST /ground computes it); without teacher data it is a clear 404, and explicit options
that cannot be met stop the server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx2")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from emtm.distill.cache import TeacherCache  # noqa: E402
from emtm.engine.teachers import export_teacher  # noqa: E402
from emtm.errors import EmtmError  # noqa: E402
from emtm.serve import create_app  # noqa: E402
from emtm.serve.teachers import TeacherOptions  # noqa: E402

TEACHERS = ("regress", "student")


def build_distilled_run(data_yaml: Path, out: Path) -> Path:
    """A tiny EMTM run distilled from two 1-epoch teachers (regress, student) on `data_yaml`: ~5 s, 1 core."""
    from emtm.config import TrainConfig
    from emtm.engine.train import train

    torch.set_num_threads(1)
    run = {"progress": False, "device": "cpu"}
    caches = []
    for model in TEACHERS:
        options = {"d": 32, "n_heads": 4} if model == "student" else {"d": 32}
        cfg = TrainConfig(
            data=str(data_yaml), model=model, model_options=options, optim={"epochs": 1}, run=run
        )
        train(cfg, out / model)
        cache = export_teacher(out / model, data_yaml, "train", out / f"{model}.h5", progress=False)
        caches.append(str(cache))
    cfg = TrainConfig(
        data=str(data_yaml),
        model="emtm",
        model_options={"d": 32, "n_heads": 4, "n_teachers": len(caches)},
        optim={"epochs": 1, "batch_size": 16},
        run=run,
        teachers=caches,
    )
    train(cfg, out / "emtm")
    return out / "emtm"


@pytest.fixture(scope="module")
def distilled(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_distilled_run(tiny_data, tmp_path_factory.mktemp("distilled"))


@pytest.fixture(scope="module")
def client(distilled: Path, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return TestClient(create_app(distilled, cache_dir=tmp_path_factory.mktemp("cache")))


def test_examples_lists_the_training_queries(client: TestClient, tiny_data: Path) -> None:
    body = client.get("/examples", params={"limit": 5}).json()
    train_ids = (tiny_data.parent / "train.txt").read_text().split()
    assert body["split"] == "train" and body["teachers"] == list(TEACHERS)
    assert body["total"] > 5 and len(body["examples"]) == 5 and body["offset"] == 0
    first = body["examples"][0]
    assert first["index"] == 0 and first["video_id"] in train_ids and first["query"]
    assert 0 <= first["ground_truth"]["start"] < first["ground_truth"]["end"] <= first["duration"]
    page = client.get("/examples", params={"offset": body["total"] - 2, "limit": 5}).json()
    assert [e["index"] for e in page["examples"]] == [body["total"] - 2, body["total"] - 1]
    info = client.get("/info").json()["teachers"]
    assert info == {
        "available": True, "reason": None, "split": "train", "names": list(TEACHERS), "total": body["total"]
    }  # fmt: skip


def test_an_example_shows_teachers_kau_weights_ensemble_and_student(
    client: TestClient, distilled: Path
) -> None:
    listed = client.get("/examples", params={"offset": 3, "limit": 1}).json()["examples"][0]
    response = client.get("/examples/3")
    assert response.status_code == 200, response.text
    ex = response.json()
    assert (ex["sample_id"], ex["query"], ex["ground_truth"]) == (
        listed["sample_id"], listed["query"], listed["ground_truth"]
    )  # fmt: skip
    n = ex["n_clips"]
    assert len(ex["times"]) == n and ex["times"][0] == pytest.approx(ex["duration"] / n / 2, abs=1e-3)
    # each teacher's distributions are exactly its cache's row for this sample
    config = json.loads((distilled / "config.json").read_text())
    assert [t["name"] for t in ex["teachers"]] == list(TEACHERS)
    dists, weights = [], []
    for teacher, cache_path in zip(ex["teachers"], config["train"]["teachers"]):
        cached = TeacherCache(cache_path).get(ex["sample_id"])
        assert cached.shape == (2, n)
        np.testing.assert_allclose([teacher["start"], teacher["end"]], cached, atol=1e-6)
        dists.append(cached)
        weights.append([teacher["kau_weights"]["start"], teacher["kau_weights"]["end"]])
    # the KAU weights are a softmax over the teachers, and the ensemble is their weighted mixture
    weights = np.array(weights)
    np.testing.assert_allclose(weights.sum(0), [1.0, 1.0], atol=1e-5)
    assert not np.allclose(weights[0], weights[1])  # a trained KAU, not the uniform fallback
    mixed = (weights[:, :, None] * np.array(dists)).sum(0)
    mixed /= mixed.sum(-1, keepdims=True)
    np.testing.assert_allclose([ex["ensemble"]["start"], ex["ensemble"]["end"]], mixed, atol=1e-5)
    # the student's distributions are those POST /ground gives for the example's features
    features = client.app.state.teachers.view.base[3]["video"]
    grounded = client.post(
        "/ground",
        json={"features": np.asarray(features).tolist(), "duration": ex["duration"], "query": ex["query"]},
    ).json()
    np.testing.assert_allclose(ex["student"]["start"], grounded["curves"]["start"], atol=1e-5)
    np.testing.assert_allclose(ex["student"]["end"], grounded["curves"]["end"], atol=1e-5)
    moment = ex["student"]["moment"]
    assert 0 <= moment["start"] < moment["end"] <= ex["duration"] + 1e-6


def test_missing_examples_and_bad_indexes(client: TestClient) -> None:
    total = client.get("/examples").json()["total"]
    for index in (total, -1):
        missing = client.get(f"/examples/{index}")
        assert missing.status_code == 404
        assert f"has {total} queries (0-{total - 1})" in missing.json()["detail"]
    assert client.get("/examples/abc").status_code == 422
    assert client.get("/examples", params={"limit": 10_000}).status_code == 422
    schema = client.get("/openapi.json").json()
    assert {"/examples", "/examples/{index}"} <= set(schema["paths"])


def test_no_teacher_data_means_404_and_no_panel(distilled: Path, tmp_path: Path) -> None:
    from test_serve_api import random_model

    plain = TestClient(create_app(random_model(tmp_path / "model"), cache_dir=tmp_path / "c1"))
    for url in ("/examples", "/examples/0"):
        refused = plain.get(url)
        assert refused.status_code == 404
        assert "not a run directory written by `emtm distill`" in refused.json()["detail"]
    assert plain.get("/info").json()["teachers"]["available"] is False
    assert "initTeachers" in plain.get("/static/app.js").text  # the page drops the panel on this 404

    off = TestClient(create_app(distilled, cache_dir=tmp_path / "c2", teachers=TeacherOptions(enabled=False)))
    assert "--no-teachers" in off.get("/examples").json()["detail"]

    # a run whose caches were moved away still serves its student; only the view is off, saying why
    moved = tmp_path / "moved"
    shutil.copytree(distilled, moved, ignore=shutil.ignore_patterns("*.pt"))
    config = json.loads((moved / "config.json").read_text())
    config["train"]["teachers"] = [str(tmp_path / "gone.h5"), str(tmp_path / "gone2.h5")]
    (moved / "config.json").write_text(json.dumps(config))
    app = create_app(moved, cache_dir=tmp_path / "c3")
    detail = TestClient(app).get("/examples").json()["detail"]
    assert "gone.h5" in detail and app.state.teachers is None


def test_explicit_options_that_cannot_be_met_stop_the_server(distilled: Path, tmp_path: Path) -> None:
    from test_serve_api import random_model

    with pytest.raises(EmtmError, match="built for split 'train', not 'test'"):
        create_app(distilled, cache_dir=tmp_path / "c", teachers=TeacherOptions(split="test"))
    with pytest.raises(EmtmError, match="serve the distilled run itself"):
        create_app(random_model(tmp_path / "m"), cache_dir=tmp_path / "c", teachers=TeacherOptions(data="x"))


def test_cli_summary_names_the_teachers(
    distilled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import uvicorn

    from emtm.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    base = ["serve", "--model", str(distilled), "--cache", str(tmp_path / "cache")]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "teachers/KAU" in out and "regress, student on train" in out
    assert main([*base, "--split", "test"]) == 2
    assert "emtm teachers export" in capsys.readouterr().err
    assert main([*base, "--no-teachers"]) == 0 and "off: switched off" in capsys.readouterr().out
