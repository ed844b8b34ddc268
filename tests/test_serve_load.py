"""`emtm serve` under load over real loopback HTTP (benchmarks/serve_loadtest.py): the small version of
benchmarks/serve_load.py (a real `emtm serve` subprocess, 4 clients x 40 requests, every limit), the
extraction-job cap over HTTP made deterministic with a gated extractor, and the checker itself against a
fake server that mixes answers up, drops connections and fails. No assertion depends on timing."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import serve_loadtest
from emtm.errors import EmtmError


def counts(load: dict) -> tuple[int, int, int, int, int]:
    """(sent, ok, errors, lost, mismatched) of a load report."""
    return load["sent"], load["ok"], load["errors"], load["lost"], load["mismatched"]


def test_many_clients_each_get_their_own_answer_and_limits_get_their_status(
    tmp_path: Path, load_benchmark
) -> None:
    for module in ("fastapi", "uvicorn", "av", "efficientnet_lite_pytorch"):
        pytest.importorskip(module)
    bench = load_benchmark("serve_load")
    report = bench.run(
        tmp_path, clients=4, total=40, max_seconds=120, distinct=8, n_videos=2, burst=4,
        serve_flags=["--max-body-kb", "256", "--max-upload-mb", "1"], progress=False,
    )  # fmt: skip
    load = report["load"]
    assert counts(load) == (40, 40, 0, 0, 0), load["examples"]
    assert load["ok"] + load["errors"] + load["lost"] + load["mismatched"] == load["sent"]
    assert load["errors_by_kind"] == {} and load["lost_by_kind"] == {} and load["stopped_by"] == "count"
    lat = load["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and load["requests_per_s"] > 0
    assert sorted(load["by_group"]) == ["features", "video"]
    assert sum(g["ok"] for g in load["by_group"].values()) == 40
    ref = report["reference"]
    # 8 distinct requests give 8 different answers, so an answer swapped between requests would be caught
    assert [ref[k] for k in ("requests", "video_requests", "feature_requests", "distinct_answers")] == [
        8,
        6,
        2,
        8,
    ]
    assert ref["grounder"] == {"checked": 2, "equal": 2}  # the server alone agrees with Grounder in-process
    checks = {c["case"]: (c["expected"], c["status"]) for c in report["limits_checks"]}
    assert all(expected == got for expected, got in checks.values()), checks
    assert checks["JSON body of 262145 bytes (chunked, no length)"] == (413, 413)
    assert checks["upload of 1048577 bytes (Content-Length)"] == (413, 413)
    assert checks["query of 301 characters"] == (413, 413) and len(checks) == 8
    burst = report["extraction_burst"]
    assert burst["as_documented"] and set(burst["statuses"]) <= {"200", "429"}
    assert sum(burst["statuses"].values()) == 4
    assert counts(report["after"]) == (8, 8, 0, 0, 0), report["after"]["examples"]
    assert report["server_log_tracebacks"] == 0
    assert json.loads((tmp_path / "serve_load.json").read_text())["load"]["ok"] == 40
    table = (tmp_path / "serve_load.md").read_text()
    assert "| load | 4 | 40 | 40 | 0 | 0 | 0 |" in table and "cores, OMP_NUM_THREADS=" in table


@contextlib.contextmanager
def uvicorn_thread(app: object) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port in a thread of this process."""
    import uvicorn

    from serve_child import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_extractions_over_the_cap_get_429_with_retry_after_over_http(tmp_path: Path, load_benchmark) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from emtm.serve import Limits, create_app

    bench = load_benchmark("serve_load")
    model = bench.write_model(tmp_path / "model")
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(6):
        (videos / f"v{i}.mp4").write_bytes(f"not really a video {i}".encode())
    app = create_app(model, videos, Limits(max_extract_jobs=2), cache_dir=tmp_path / "cache")
    entered, release = threading.Semaphore(0), threading.Event()

    def gated(path: Path) -> tuple[np.ndarray, float]:  # holds its job slot until released
        entered.release()
        assert release.wait(60)
        return np.random.default_rng(int(path.stem[1:])).normal(size=(12, bench.DIM)).astype(np.float32), 6.0

    app.state.service.extractor = gated
    bodies = [{"video": f"v{i}.mp4", "query": f"a red square appears #{i}"} for i in range(6)]
    with uvicorn_thread(app) as url:
        held: list[serve_loadtest.Answer] = []
        holders = threading.Thread(target=lambda: held.extend(serve_loadtest.burst(url, bodies[:2])))
        holders.start()
        for _ in range(2):  # both extraction slots are taken
            assert entered.acquire(timeout=60)
        refused = serve_loadtest.burst(url, bodies[2:])  # 4 more at once while the slots are held
        release.set()
        holders.join(60)
        again = serve_loadtest.post_json(url, "/ground", bodies[2])  # a slot is free again
    assert [(a.status, a.headers.get("retry-after")) for a in refused] == [(429, "5")] * 4
    assert all("already running" in a.payload["detail"] for a in refused)
    assert [a.status for a in held] == [200, 200]
    assert [a.payload["query"] for a in held] == [b["query"] for b in bodies[:2]]
    assert again.status == 200 and again.payload["query"] == bodies[2]["query"]


class FakeServer(BaseHTTPRequestHandler):
    """POST /ground answers by query: right, swapped with another query's answer, wrong moments, 500,
    a dropped connection, or a 200 that is not JSON."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["query"]
        n = int(query.split()[-1])
        if n == 4:
            self.close_connection = True  # no answer at all
            return
        status, body = 200, {"query": query, "moments": moments(n)}
        if n == 1:
            body = {"query": "query 0", "moments": moments(0)}  # another request's answer
        elif n == 2:
            body["moments"] = moments(7)
        elif n == 3:
            status, body = 500, {"detail": "boom"}
        raw = b"<html>oops</html>" if n == 5 else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def moments(n: int) -> list[dict[str, float]]:
    return [{"start": float(n), "end": n + 1.5, "score": 0.5 / (n + 1)}]


def test_the_checker_counts_mixed_up_wrong_failed_and_lost_answers() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    bodies = [{"video": "v.mp4", "query": f"query {i}"} for i in range(6)]
    try:
        report = serve_loadtest.run_load(url, bodies, [moments(i) for i in range(6)], clients=3, total=12)
        with pytest.raises(EmtmError, match="reference request 3 .* got HTTP 500"):
            serve_loadtest.reference_answers(url, bodies)
    finally:
        server.shutdown()
        server.server_close()
    assert counts(report) == (12, 2, 4, 2, 4)
    assert report["errors_by_kind"] == {"HTTP 200 (not JSON)": 2, "HTTP 500": 2}
    assert report["lost_by_kind"] == {"RemoteDisconnected": 2}
    problems = {e["query"]: e["problem"] for e in report["examples"]}
    assert "echoes query 'query 0'" in problems["query 1"] and "differ" in problems["query 2"]
    assert report["stopped_by"] == "count" and report["latency_ms"]["p50"] > 0
    with pytest.raises(EmtmError, match="requests 0 and 1 share the query"):
        serve_loadtest.check_bodies([{"query": "a cat"}, {"query": " a cat "}])
    assert (
        serve_loadtest.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
        and serve_loadtest.percentile([5.0], 99) == 5.0
    )
