"""`emtm serve`'s JSON API through FastAPI's TestClient: grounding, curves, caching, uploads, OpenAPI,
and the limits and refusals (body and upload size, query length, extraction jobs, timeouts, paths)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx2")

import httpx2  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from emtm.api import Grounder  # noqa: E402
from emtm.engine.export import write_random_model  # noqa: E402
from emtm.serve import Limits, create_app  # noqa: E402

WORDS = ["a", "red", "square", "blue", "circle", "green", "triangle", "appears"]
SPEC = {"backbone": "efficientnet-lite0@32px", "fps": 2.0, "clip_seconds": 0.5}
DIM = 1280


def random_model(out: Path, spec: dict | None = SPEC) -> Path:
    """A random-weight student on 1280-d features; `spec` is written as its recorded feature spec."""
    path = write_random_model(out, WORDS, video_dim=DIM, max_video_len=32)
    if spec:
        config = json.loads((path / "config.json").read_text())
        config["features"].update(spec)
        (path / "config.json").write_text(json.dumps(config))
    return path


def fake_features(path: Path) -> tuple[np.ndarray, float]:
    """A stand-in extractor (seeded by the file's bytes) so that most tests need no backbone."""
    seed = sum(path.read_bytes()) % 1000
    return np.random.default_rng(seed).normal(size=(12, DIM)).astype(np.float32), 6.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("serve")
    model = random_model(root / "model")
    videos = root / "videos"
    videos.mkdir()
    (videos / "one.mp4").write_bytes(b"not really a video 1")
    (videos / "two.webm").write_bytes(b"not really a video 2")
    (videos / "notes.txt").write_text("not a video")
    (root / "secret.mp4").write_bytes(b"outside the served folder")
    (videos / "escape.mp4").symlink_to(root / "secret.mp4")
    (videos / "inside.mp4").symlink_to(videos / "one.mp4")
    return {"root": root, "model": model, "videos": videos}


def client_for(served: dict, limits: Limits | None = None, extractor=fake_features) -> TestClient:
    app = create_app(served["model"], served["videos"], limits, cache_dir=served["root"] / "cache")
    if extractor is not None:
        app.state.service.extractor = extractor
    return TestClient(app)


@pytest.fixture(scope="module")
def client(served: dict) -> TestClient:
    return client_for(served)


def test_lists_only_the_videos_inside_the_folder(client: TestClient) -> None:
    body = client.get("/videos").json()
    assert [v["name"] for v in body["videos"]] == ["inside.mp4", "one.mp4", "two.webm"]
    assert body["extraction"] == {"available": True, "refusal": None, **SPEC}
    assert client.get("/media/one.mp4").content == b"not really a video 1"
    page = client.get("/")
    assert page.status_code == 200 and 'id="best-moment"' in page.text and "/static/app.js" in page.text
    assert "function drawCurves" in client.get("/static/app.js").text


def test_ground_a_served_video_matches_the_grounder_and_gives_curves(
    served: dict, client: TestClient
) -> None:
    response = client.post("/ground", json={"video": "one.mp4", "query": "a red square appears", "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    features, duration = fake_features(served["videos"] / "one.mp4")
    grounder = Grounder.load(served["model"], device="cpu")
    expected = grounder.ground(features, "a red square appears", duration=duration, top_k=3)
    assert [(m["start"], m["end"], m["score"]) for m in body["moments"]] == [
        (m.start, m.end, m.score) for m in expected
    ]
    assert (body["duration"], body["n_clips"], body["source"], body["media_url"]) == (
        6.0,
        12,
        "video",
        "/media/one.mp4",
    )
    curves = body["curves"]
    assert len(curves["times"]) == len(curves["start"]) == len(curves["end"]) == 12
    assert curves["times"][0] == pytest.approx(0.25) and curves["times"][-1] == pytest.approx(5.75)
    assert sum(curves["start"]) == pytest.approx(1.0, abs=1e-5) and sum(curves["end"]) == pytest.approx(
        1.0, abs=1e-5
    )
    assert body["cached"] is False
    again = client.post(
        "/ground", json={"video": "one.mp4", "query": "a blue circle appears", "top_k": 1}
    ).json()
    assert again["cached"] is True and len(again["moments"]) == 1
    assert len(list((served["root"] / "cache" / "features").glob("*.npy"))) == 1


def test_ground_precomputed_features(served: dict, client: TestClient) -> None:
    features = np.random.default_rng(3).normal(size=(8, DIM)).astype(np.float32)
    body = client.post(
        "/ground", json={"features": features.tolist(), "duration": 4.0, "query": "a circle"}
    ).json()
    grounder = Grounder.load(served["model"], device="cpu")
    best = grounder.ground(features, "a circle", duration=4.0)
    assert body["moments"][0] == {"start": best.start, "end": best.end, "score": best.score}
    bad = client.post("/ground", json={"features": [[1.0, 2.0]], "duration": 4.0, "query": "a circle"})
    assert bad.status_code == 422 and f"(T, {DIM})" in bad.json()["detail"]


def test_a_long_video_is_grounded_in_windows_and_still_gets_curves(served: dict, client: TestClient) -> None:
    features = np.random.default_rng(4).normal(size=(80, DIM)).astype(np.float32)  # > max_video_len (32)
    body = client.post(
        "/ground", json={"features": features.tolist(), "duration": 40.0, "query": "a circle", "top_k": 3}
    ).json()
    grounder = Grounder.load(served["model"], device="cpu")
    video = grounder.encode_video(features, 40.0)
    assert video.windows  # the Grounder's default for a long video: sliding windows
    best = video.ground("a circle", top_k=3)
    assert body["moments"] == [{"start": m.start, "end": m.end, "score": m.score} for m in best]
    assert body["n_clips"] == 80
    curves = body["curves"]  # on the video's own 80 clips, the time axis of the moments
    assert len(curves["times"]) == len(curves["start"]) == len(curves["end"]) == 80
    assert curves["times"][0] == pytest.approx(0.25) and curves["times"][-1] == pytest.approx(39.75)
    assert sum(curves["start"]) == pytest.approx(1.0, abs=1e-5)
    # inside the first window (no overlap there) the curve is that window's own, scaled
    from emtm.serve.service import probability_curves

    first = probability_curves(grounder, video.prepared.windows[0], "a circle")["start"]
    head = np.array(curves["start"][:8]) / np.array(first[:8])
    assert np.allclose(head, head[0], rtol=1e-4)


def test_upload_then_ground_and_the_upload_limit(served: dict) -> None:
    client = client_for(served, Limits(max_upload_bytes=1000))
    data = b"uploaded bytes " * 10
    up = client.post("/upload", params={"filename": "my clip.mp4"}, content=data)
    assert up.status_code == 200, up.text
    upload = up.json()["upload"]
    assert upload.endswith(".mp4") and up.json()["bytes"] == len(data)
    assert client.get(up.json()["url"]).content == data
    body = client.post("/ground", json={"upload": upload, "query": "a green triangle"}).json()
    assert body["source"] == "upload" and body["moments"]
    big = client.post("/upload", params={"filename": "big.mp4"}, content=b"x" * 1001)
    assert big.status_code == 413 and "1000 bytes" in big.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while the body streams
        for _ in range(5):
            yield b"y" * 300

    streamed = client.post("/upload", params={"filename": "big.mp4"}, content=chunks())
    assert streamed.status_code == 413 and "limit of 1000 bytes" in streamed.json()["detail"]
    assert not list((served["root"] / "cache" / "uploads").rglob(".part-*"))  # nothing half-written is left
    for name in ("../x.mp4", "a\nb.mp4", "clip.exe", "x" * 300 + ".mp4"):
        refused = client.post("/upload", params={"filename": name}, content=b"abc")
        assert refused.status_code == 400, (name, refused.text)


def test_request_body_and_query_limits(served: dict) -> None:
    client = client_for(served, Limits(max_body_bytes=2000, max_query_chars=50, max_top_k=4))
    big = client.post("/ground", json={"video": "one.mp4", "query": "a " * 1500})
    assert big.status_code == 413 and "2000 bytes" in big.json()["detail"]
    long = client.post("/ground", json={"video": "one.mp4", "query": "a" * 51})
    assert long.status_code == 413 and "51 characters; the limit is 50" in long.json()["detail"]
    assert client.post("/ground", json={"video": "one.mp4", "query": "a" * 50, "top_k": 4}).status_code == 200
    top = client.post("/ground", json={"video": "one.mp4", "query": "a red square", "top_k": 5})
    assert top.status_code == 422 and "between 1 and 4" in top.json()["detail"]
    empty = client.post("/ground", json={"video": "one.mp4", "query": "   "})
    assert empty.status_code == 422 and "query is empty" in empty.json()["detail"]
    both = client.post("/ground", json={"video": "one.mp4", "upload": "x.mp4", "query": "a"})
    assert both.status_code == 422 and "exactly one of video, upload and features" in both.json()["detail"]
    extra = client.post("/ground", json={"video": "one.mp4", "query": "a", "path": "/etc/passwd"})
    assert extra.status_code == 422 and "path" in extra.json()["detail"]
    for loose in (True, "3", 2.0):  # not integers: refused, not coerced
        typed = client.post("/ground", json={"video": "one.mp4", "query": "a", "top_k": loose})
        assert typed.status_code == 422 and "top_k" in typed.json()["detail"], loose


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("../secret.mp4", 400),
        ("/etc/passwd", 400),
        ("..%2Fsecret.mp4", 400),
        ("%2e%2e%2fsecret.mp4", 400),
        ("sub\\..\\secret.mp4", 400),
        ("..", 400),
        ("one.mp4\x00.txt", 400),
        ("one\n.mp4", 400),
        ("v" * 300 + ".mp4", 400),
        ("notes.txt", 400),
        (".hidden.mp4", 400),
        ("escape.mp4", 403),
        ("missing.mp4", 404),
    ],
)
def test_paths_outside_the_folder_and_odd_names_are_refused(
    client: TestClient, name: str, status: int
) -> None:
    response = client.post("/ground", json={"video": name, "query": "a red square"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert "name" in detail or "outside the served folder" in detail or "not found" in detail
    assert "outside the served folder" not in response.text or status == 403


@pytest.mark.parametrize(
    "url",
    [
        "/media/..%2Fsecret.mp4",
        "/media/%2e%2e%2fsecret.mp4",
        "/media/escape.mp4",
        "/media/..%5Csecret.mp4",
        "/media/%2Fetc%2Fpasswd",
        "/uploads/..%2F..%2Fsecret.mp4",
    ],
)
def test_media_urls_never_serve_files_outside_the_folder(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert 400 <= response.status_code < 500, (url, response.status_code)
    assert b"outside the served folder" not in response.content or response.status_code == 403
    assert response.content != b"outside the served folder"


def test_model_without_a_feature_spec_refuses_raw_video_but_takes_features(
    served: dict, tmp_path: Path
) -> None:
    model = random_model(tmp_path / "bare", spec=None)
    client = TestClient(create_app(model, served["videos"], cache_dir=tmp_path / "cache"))
    info = client.get("/videos").json()["extraction"]
    assert info["available"] is False and "backbone" in info["refusal"]
    refused = client.post("/ground", json={"video": "one.mp4", "query": "a red square"})
    assert refused.status_code == 422 and "cannot ground raw video files" in refused.json()["detail"]
    upload = client.post("/upload", params={"filename": "a.mp4"}, content=b"abc")
    assert upload.status_code == 422
    features = np.zeros((5, DIM), dtype=np.float32).tolist()
    assert (
        client.post("/ground", json={"features": features, "duration": 5.0, "query": "a"}).status_code == 200
    )


def test_extraction_jobs_are_bounded_and_requests_time_out(served: dict) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(path: Path) -> tuple[np.ndarray, float]:
        started.set()
        release.wait(10)
        return fake_features(path)

    limits = Limits(max_extract_jobs=1, timeout_s=2.0)
    app = create_app(served["model"], served["videos"], limits, cache_dir=served["root"] / "cache-slow")
    app.state.service.extractor = slow

    async def scenario() -> tuple[httpx2.Response, httpx2.Response, httpx2.Response]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
            first = asyncio.ensure_future(
                http.post("/ground", json={"video": "one.mp4", "query": "a red square"})
            )
            while not started.is_set():
                await asyncio.sleep(0.01)
            second = await http.post("/ground", json={"video": "two.webm", "query": "a red square"})
            timed_out = await first  # the slow extraction outlives the 2 s limit
            release.set()
            return first.result(), second, timed_out

    first, second, _ = asyncio.run(scenario())
    assert second.status_code == 429 and "already running" in second.json()["detail"]
    assert second.headers["retry-after"] == "5"
    assert first.status_code == 504 and "2 s limit" in first.json()["detail"]


def test_openapi_schema_describes_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/ground", "/upload", "/videos", "/info"} <= set(schema["paths"])
    ground = schema["paths"]["/ground"]["post"]
    assert ground["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("GroundRequest")
    props = schema["components"]["schemas"]["GroundResponse"]["properties"]
    assert {"moments", "curves", "duration"} <= set(props)
    assert "application/octet-stream" in schema["paths"]["/upload"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # its Swagger page would load scripts from a CDN


def test_media_supports_range_requests_for_seeking(client: TestClient) -> None:
    response = client.get("/media/one.mp4", headers={"Range": "bytes=4-9"})
    assert response.status_code == 206 and response.content == b"really"


def test_cli_binds_loopback_unless_told_and_warns(
    served: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import uvicorn

    from emtm.cli import main

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    base = ["serve", "--model", str(served["model"]), "--videos", str(served["videos"])]
    base += ["--cache", str(served["root"] / "cache-cli")]
    assert main(base) == 0 and calls[-1]["host"] == "127.0.0.1"
    assert "127.0.0.1:8000" in capsys.readouterr().out
    assert main([*base, "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err and len(calls) == 1
    assert main([*base, "--host", "0.0.0.0", "--port", "8123", "--allow-remote"]) == 0
    assert calls[-1] == {"host": "0.0.0.0", "port": 8123, "log_level": "warning"}
    assert "WARNING: listening on 0.0.0.0, not loopback" in capsys.readouterr().err


def test_the_cli_alone_never_imports_the_web_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, emtm.cli; emtm.cli.build_parser(); "
        "print(sorted({'fastapi', 'uvicorn'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _upload(client: TestClient, name: str) -> dict:
    response = client.post("/upload", params={"filename": f"{name}.mp4"}, content=name.encode() * 50)
    assert response.status_code == 200, response.text
    return response.json()


def _features_of(features: Path, upload: dict) -> list[Path]:
    return list(features.glob(upload["upload"].split(".", 1)[0] + "*"))


def test_uploads_are_capped_by_count_least_recently_used_first(served: dict, tmp_path: Path) -> None:
    app = create_app(served["model"], None, Limits(max_upload_cache=2), cache_dir=tmp_path / "cache")
    app.state.service.extractor = fake_features
    features, uploads = tmp_path / "cache" / "features", app.state.uploads.root
    with TestClient(app) as client:
        a, b = _upload(client, "a"), _upload(client, "b")
        assert client.post("/ground", json={"upload": a["upload"], "query": "a red"}).status_code == 200
        assert len(_features_of(features, a)) == 2  # .npy + .json
        c = _upload(client, "c")  # a was used after b was uploaded: b is the least recently used
        assert (a["evicted"], b["evicted"], c["evicted"]) == ([], [], [b["upload"]])
        gone = client.post("/ground", json={"upload": b["upload"], "query": "a red square"})
        assert gone.status_code == 404 and "not kept on this server" in gone.json()["detail"]
        assert "2 most recently used uploads" in gone.json()["detail"]
        assert client.get(b["url"]).status_code == 404
        d = _upload(client, "d")
        assert d["evicted"] == [a["upload"]] and not _features_of(features, a)  # its features went too
        assert app.state.uploads.names() == [c["upload"], d["upload"]]
        assert sorted(p.name for p in uploads.iterdir()) == sorted([c["upload"], d["upload"]])
        assert client.get(d["url"]).content == b"d" * 50


def test_uploads_are_capped_by_bytes_with_their_features(served: dict, tmp_path: Path) -> None:
    # one upload's fake features take 61.6 kB (12 x 1280 float32): two uploads with features exceed 100 kB
    limits = Limits(max_upload_cache=10, max_upload_cache_bytes=100_000)
    app = create_app(served["model"], None, limits, cache_dir=tmp_path / "cache")
    app.state.service.extractor = fake_features
    features = tmp_path / "cache" / "features"
    with TestClient(app) as client:
        a, b = _upload(client, "a"), _upload(client, "b")
        assert a["evicted"] == b["evicted"] == []  # 200 bytes of video
        assert client.post("/ground", json={"upload": a["upload"], "query": "a"}).status_code == 200
        assert app.state.uploads.names() == [b["upload"], a["upload"]]
        assert client.post("/ground", json={"upload": b["upload"], "query": "a"}).status_code == 200
        # b's features pushed the total over 100 kB: a, now the least recently used, was evicted
        assert app.state.uploads.names() == [b["upload"]]
        assert not _features_of(features, a) and len(_features_of(features, b)) == 2
        assert app.state.uploads.total_bytes() <= 100_000
    # an upload over the byte cap on its own stays while it is the most recent one
    app = create_app(served["model"], None, Limits(max_upload_cache_bytes=1000), cache_dir=tmp_path / "c2")
    app.state.service.extractor = fake_features
    with TestClient(app) as client:
        a = _upload(client, "a")
        assert client.post("/ground", json={"upload": a["upload"], "query": "a"}).status_code == 200
        assert app.state.uploads.names() == [a["upload"]] and client.get(a["url"]).status_code == 200


def test_uploads_are_deleted_at_shutdown_and_leftovers_at_startup(served: dict, tmp_path: Path) -> None:
    import fcntl

    cache = tmp_path / "cache"
    leftover = "0123456789abcdef" * 2
    dead, live = cache / "uploads" / "111-dead", cache / "uploads" / "222-live"  # two other servers' folders
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / f"{leftover}.mp4").write_bytes(b"an upload")
    (cache / "uploads" / "111-dead.lock").write_text("")  # its server was killed: the lock is free
    held = open(cache / "uploads" / "222-live.lock", "w")  # noqa: SIM115 - a running server holds it
    fcntl.flock(held, fcntl.LOCK_EX)
    loose = "fedcba9876543210" * 2  # the older layout: uploads directly in uploads/
    (cache / "uploads" / f"{loose}.mp4").write_bytes(b"from a server that was killed")
    (cache / "features").mkdir(parents=True)
    for sha in (leftover, loose):
        (cache / "features" / f"{sha}0123-abc.npy").write_bytes(b"its features")
    app = create_app(served["model"], served["videos"], cache_dir=cache)
    app.state.service.extractor = fake_features
    with TestClient(app) as client:
        own = app.state.uploads.root
        assert sorted(p.name for p in (cache / "uploads").iterdir()) == sorted(
            [own.name, own.name + ".lock", "222-live", "222-live.lock"]
        )
        assert not list(own.iterdir()) and (live / f"{leftover}.mp4").exists()  # a running server's kept
        assert not list((cache / "features").iterdir())
        up = _upload(client, "x")
        same = client.post(  # the same bytes as the served one.mp4: the same cached features
            "/upload", params={"filename": "copy.mp4"}, content=(served["videos"] / "one.mp4").read_bytes()
        ).json()
        for request in ({"upload": up["upload"]}, {"upload": same["upload"]}, {"video": "one.mp4"}):
            assert client.post("/ground", json={**request, "query": "a"}).status_code == 200
        assert len(list((cache / "features").glob("*.npy"))) == 2
    assert sorted(p.name for p in (cache / "uploads").iterdir()) == ["222-live", "222-live.lock"]
    assert not _features_of(cache / "features", up)
    assert len(_features_of(cache / "features", same)) == 2  # still one.mp4's features
    held.close()
    shutil.rmtree(live)
    (cache / "uploads" / "222-live.lock").unlink()
    with TestClient(create_app(served["model"], served["videos"], cache_dir=cache)):
        pass
    assert not (cache / "uploads").exists()  # the last server to stop removes uploads/


def test_an_upload_in_use_is_not_evicted(tmp_path: Path) -> None:
    from emtm.serve.uploads import UploadCache

    root = tmp_path / "uploads"
    root.mkdir()
    forgotten: list[str] = []
    cache = UploadCache(root, max_items=1, max_bytes=10**9, forget=forgotten.append)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (root / name).write_bytes(b"x")
    assert cache.add("a.mp4", "aa") == []
    cache.pin("a.mp4")  # being extracted
    assert cache.add("b.mp4", "bb") == [] and cache.names() == ["a.mp4", "b.mp4"]  # over the cap, briefly
    cache.unpin("a.mp4")
    assert cache.add("c.mp4", "cc") == ["a.mp4", "b.mp4"] and forgotten == ["aa", "bb"]
    assert sorted(p.name for p in root.iterdir()) == ["c.mp4"]


def test_two_servers_can_share_a_cache(served: dict, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = create_app(served["model"], None, cache_dir=cache)
    first.state.service.extractor = fake_features
    with TestClient(first) as client:
        up = _upload(client, "a")
        second = create_app(served["model"], None, cache_dir=cache)  # starts while the first is serving
        with TestClient(second):
            assert client.get(up["url"]).content == b"a" * 50
            assert client.post("/ground", json={"upload": up["upload"], "query": "a"}).status_code == 200
        assert client.get(up["url"]).content == b"a" * 50  # and after the second stopped


def test_the_start_up_table_shows_byte_limits_as_the_flags_take_them() -> None:
    from emtm.cli.serve import readable

    assert readable("max_upload_bytes", 200 * 2**20) == "200 MiB"
    assert readable("max_body_bytes", 64 * 2**10) == "64 KiB"
    assert readable("max_upload_cache", 20) == "20"


def test_no_server_path_and_no_500_reaches_a_client(served: dict) -> None:
    client = TestClient(client_for(served).app, raise_server_exceptions=False)
    body = b'{"video": "one.mp4", "query": "a \\ud800 red square"}'  # a lone UTF-16 surrogate
    lone = client.post("/ground", content=body, headers={"content-type": "application/json"})
    assert lone.status_code == 422 and "lone UTF-16 surrogate" in lone.json()["detail"]
    info = client.get("/info").text
    missing = client.post("/ground", json={"upload": "nope.mp4", "query": "a"}).text
    for text in (info, missing):
        for folder in (served["root"], served["model"], served["videos"]):
            assert str(folder) not in text, text
    assert client.get("/info").json()["model"] == served["model"].name
