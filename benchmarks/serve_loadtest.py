"""Load test of a running `emtm serve` over HTTP: N concurrent clients, each answer checked against its own
request. Standard library only (http.client + threads), so it works from the `serve` extra alone; it
starts no server itself (benchmarks/serve_load.py and tests/test_serve_load.py do). A helper module, not a
script: `import serve_loadtest` from benchmarks/ (the tests get it there through tests/conftest.py).

    bodies = [{"video": "a.mp4", "query": "a red square appears"}, ...]   # one distinct query each
    references = reference_answers(url, bodies)          # each body alone, one at a time
    report = run_load(url, bodies, references, clients=16, total=2000, max_seconds=120)

A 200 answer is `ok` when it echoes its own request's query and gives exactly the moments (start, end,
score) that the same request got alone; otherwise it is `mismatched`. Any other status (or a 200 whose
body is not the expected JSON) is an error, counted by kind; a request with no answer at all
(connection refused or reset, timeout, cut-off answer) is `lost`. Latency is that of the ok requests.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from emtm.errors import EmtmError

CHUNK = 64 * 1024
MAX_EXAMPLES = 5  # problems kept verbatim in a report


@dataclass
class Answer:
    """What one request got: the HTTP status and parsed JSON, or `status` None and why (lost)."""

    status: int | None
    payload: Any = None
    seconds: float = 0.0
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _connection(base_url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EmtmError(f"server URL {base_url!r}: expected http://HOST:PORT (e.g. http://127.0.0.1:8000)")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, parts.port, timeout=timeout)


def request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    content_type: str = "application/json",
    length: int | None = None,
    timeout: float = 60.0,
) -> Answer:
    """One request on a fresh connection (no proxy, no retry). `body` bytes are sent with their length;
    an iterable of chunks is sent with `length` as Content-Length, or chunked when `length` is None. A
    server may answer before the whole body is sent (a refused size): sending then stops and the answer
    is read."""
    conn = _connection(base_url, timeout)
    started = time.perf_counter()
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        chunks: Iterable[bytes] = ()
        if body is not None:
            conn.putheader("Content-Type", content_type)
            if isinstance(body, bytes | bytearray):
                chunks, length = (body[i : i + CHUNK] for i in range(0, len(body), CHUNK)), len(body)
            else:
                chunks = body
            if length is None:
                conn.putheader("Transfer-Encoding", "chunked")
            else:
                conn.putheader("Content-Length", str(length))
        conn.endheaders()
        try:
            for chunk in chunks:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if length is None else chunk)
            if body is not None and length is None:
                conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed its side; its answer may still be readable
        response = conn.getresponse()
        raw = response.read()
        seconds = time.perf_counter() - started
        headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            return Answer(response.status, raw[:200].decode(errors="replace"), seconds, "not JSON", headers)
        return Answer(response.status, payload, seconds, None, headers)
    except TimeoutError:
        return Answer(None, seconds=time.perf_counter() - started, error="timeout")
    except (OSError, http.client.HTTPException) as err:
        return Answer(None, seconds=time.perf_counter() - started, error=type(err).__name__)
    finally:
        conn.close()


def post_json(base_url: str, path: str, body: dict[str, Any], timeout: float = 60.0) -> Answer:
    return request(base_url, "POST", path, json.dumps(body).encode(), timeout=timeout)


def check_bodies(bodies: list[dict[str, Any]]) -> None:
    """Every body has a non-empty `query`, and no two share one (the echo must identify its request)."""
    if not bodies:
        raise EmtmError("load test: no requests given; pass at least one POST /ground body")
    seen: dict[str, int] = {}
    for i, body in enumerate(bodies):
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise EmtmError(f"load test: request {i} has no query; each body needs a 'query' sentence")
        key = query.strip()
        if key in seen:
            raise EmtmError(
                f"load test: requests {seen[key]} and {i} share the query {key!r}; give every request its "
                "own query so that each answer can be matched to its request"
            )
        seen[key] = i


def reference_answers(base_url: str, bodies: list[dict[str, Any]], timeout: float = 120.0) -> list[Any]:
    """The moments each body gets when it is sent alone, one after the other (the load's ground truth)."""
    check_bodies(bodies)
    out = []
    for i, body in enumerate(bodies):
        answer = post_json(base_url, "/ground", body, timeout)
        if answer.status != 200 or not isinstance(answer.payload, dict) or "moments" not in answer.payload:
            why = answer.payload if answer.status is not None else answer.error
            raise EmtmError(
                f"load test: reference request {i} ({body['query']!r}) got HTTP {answer.status}: {why}; "
                "every load request must succeed on its own first"
            )
        out.append(answer.payload["moments"])
    return out


def mismatch(body: dict[str, Any], payload: Any, reference: Any) -> str | None:
    """Why a 200 answer is not the answer to `body` (None when it is)."""
    if not isinstance(payload, dict) or "query" not in payload or "moments" not in payload:
        return "answer lacks query/moments"
    if payload["query"] != body["query"].strip():
        return f"answer echoes query {payload['query']!r}"
    if payload["moments"] != reference:
        return f"moments {payload['moments']} differ from the request's own answer {reference}"
    return None


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    out = {f"p{q}": percentile(ms, q) for q in (50, 90, 99)}
    out.update(max=max(ms) if ms else math.nan, mean=sum(ms) / len(ms) if ms else math.nan)
    return {k: round(v, 2) for k, v in out.items()}


def run_load(
    base_url: str,
    bodies: list[dict[str, Any]],
    references: list[Any],
    clients: int = 16,
    total: int = 2000,
    max_seconds: float = 120.0,
    timeout: float = 60.0,
    on_answer: Callable[[], None] | None = None,
    groups: list[str] | None = None,
) -> dict[str, Any]:
    """`clients` threads send POST /ground bodies (cycling through `bodies`) until `total` requests have
    been sent or `max_seconds` have passed (requests in flight then still finish); a JSON-able report.
    `groups` (a label per body, e.g. "video" / "features") adds the ok count and latency per label."""
    check_bodies(bodies)
    if len(references) != len(bodies) or (groups is not None and len(groups) != len(bodies)):
        raise EmtmError(
            f"load test: {len(references)} reference answers (or groups) for {len(bodies)} requests"
        )
    if clients < 1 or total < 1 or not max_seconds > 0:
        raise EmtmError(
            f"load test: clients {clients}, total {total}, max_seconds {max_seconds}: must be > 0"
        )
    encoded = [json.dumps(body).encode() for body in bodies]
    numbers: Iterator[int] = itertools.count()
    lock = threading.Lock()
    results: list[tuple[int, Answer]] = []
    started = time.perf_counter()
    deadline = started + max_seconds

    def client() -> None:
        while True:
            with lock:
                if time.perf_counter() >= deadline:
                    return
                n = next(numbers)
            if n >= total:
                return
            answer = request(base_url, "POST", "/ground", encoded[n % len(bodies)], timeout=timeout)
            with lock:
                results.append((n, answer))
            if on_answer is not None:
                on_answer()

    threads = [threading.Thread(target=client, name=f"load-client-{i}", daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started

    ok_seconds: list[float] = []
    by_group: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    mismatched, examples = 0, []
    for n, answer in sorted(results, key=lambda r: r[0]):
        body = bodies[n % len(bodies)]
        if answer.status is None:
            lost[answer.error or "no answer"] += 1
            problem = f"lost ({answer.error})"
        elif answer.status != 200 or answer.error:
            errors[f"HTTP {answer.status}" + (f" ({answer.error})" if answer.error else "")] += 1
            problem = f"HTTP {answer.status}: {answer.payload}"
        else:
            problem = mismatch(body, answer.payload, references[n % len(bodies)])
            if problem is None:
                ok_seconds.append(answer.seconds)
                if groups is not None:
                    by_group.setdefault(groups[n % len(bodies)], []).append(answer.seconds)
                continue
            mismatched += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append({"request": n, "query": body["query"], "problem": str(problem)[:500]})
    sent = len(results)
    return {
        "clients": clients,
        "requests_planned": total,
        "max_seconds": max_seconds,
        "distinct_requests": len(bodies),
        "sent": sent,
        "ok": len(ok_seconds),
        "mismatched": mismatched,
        "errors": sum(errors.values()),
        "errors_by_kind": dict(sorted(errors.items())),
        "lost": sum(lost.values()),
        "lost_by_kind": dict(sorted(lost.items())),
        "stopped_by": "count" if sent >= total else "time",
        "seconds": round(elapsed, 3),
        "requests_per_s": round(sent / elapsed, 2) if elapsed > 0 else math.nan,
        "latency_ms": latency_summary(ok_seconds),
        "by_group": {
            k: {"ok": len(v), "latency_ms": latency_summary(v)} for k, v in sorted(by_group.items())
        },
        "examples": examples,
    }


def burst(base_url: str, bodies: list[dict[str, Any]], timeout: float = 120.0) -> list[Answer]:
    """Send all `bodies` to POST /ground at once (one thread each, released together)."""
    gate = threading.Barrier(len(bodies))
    answers: list[Answer | None] = [None] * len(bodies)

    def send(i: int) -> None:
        gate.wait()
        answers[i] = post_json(base_url, "/ground", bodies[i], timeout)

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [a if a is not None else Answer(None, error="thread died") for a in answers]


@dataclass
class LimitCase:
    """A request over one of the server's limits and the status the docs promise for it."""

    name: str
    expected: int
    send: Callable[[], Answer]


def get_json(base_url: str, path: str, timeout: float = 10.0) -> Any:
    """GET `path` and its JSON, or EmtmError when the server does not answer 200."""
    answer = request(base_url, "GET", path, timeout=timeout)
    if answer.status != 200:
        raise EmtmError(
            f"GET {base_url}{path}: {answer.status or answer.error}; is `emtm serve` running there?"
        )
    return answer.payload


def limit_cases(base_url: str, info: dict[str, Any], video: str, timeout: float = 60.0) -> list[LimitCase]:
    """Requests just over each size limit of a server (`info` is its GET /info), plus refused names and a
    bad top_k, for a served `video`. Bodies over a limit are really sent, with or without a length; the
    upload cases only when the server can extract raw video (otherwise uploads are refused with 422)."""
    limits = info["limits"]
    body_limit, upload_limit = int(limits["max_body_bytes"]), int(limits["max_upload_bytes"])
    query_limit, top_k_limit = int(limits["max_query_chars"]), int(limits["max_top_k"])

    def ground(body: dict[str, Any]) -> Callable[[], Answer]:
        return lambda: post_json(base_url, "/ground", body, timeout)

    def big_json() -> bytes:  # valid JSON, one byte over the limit
        head, tail = json.dumps({"video": video, "query": ""})[:-2].encode(), b'"}'
        return head + b"a" * (body_limit + 1 - len(head) - len(tail)) + tail

    def pieces(size: int) -> Iterator[bytes]:
        for start in range(0, size, CHUNK):
            yield b"\0" * min(CHUNK, size - start)

    def post(path: str, make: Callable[[], bytes | Iterable[bytes]], length: int | None, kind: str) -> Any:
        return lambda: request(base_url, "POST", path, make(), kind, length=length, timeout=timeout)

    upload, octet, js = "/upload?filename=big.mp4", "application/octet-stream", "application/json"
    over_body, over_upload = body_limit + 1, upload_limit + 1
    long_query = {"video": video, "query": "a" * (query_limit + 1)}
    big_k = {"video": video, "query": "a", "top_k": top_k_limit + 1}
    cases = [
        LimitCase(f"query of {query_limit + 1} characters", 413, ground(long_query)),
        LimitCase(f"JSON body of {over_body} bytes (Content-Length)", 413,
                  post("/ground", big_json, None, js)),
        LimitCase(f"JSON body of {over_body} bytes (chunked, no length)", 413,
                  post("/ground", lambda: pieces(over_body), None, js)),
        LimitCase(f"top_k {top_k_limit + 1}", 422, ground(big_k)),
        LimitCase("video '../x.mp4' (a path)", 400, ground({"video": "../x.mp4", "query": "a"})),
        LimitCase("video 'missing.mp4' (not in the folder)", 404,
                  ground({"video": "missing.mp4", "query": "a"})),
    ]  # fmt: skip
    if info.get("extraction", {}).get("available"):
        cases += [
            LimitCase(f"upload of {over_upload} bytes (Content-Length)", 413,
                      post(upload, lambda: pieces(over_upload), over_upload, octet)),
            LimitCase(f"upload of {over_upload} bytes (chunked, no length)", 413,
                      post(upload, lambda: pieces(over_upload), None, octet)),
        ]  # fmt: skip
    return cases


def run_limit_cases(cases: list[LimitCase]) -> list[dict[str, Any]]:
    """Send each case once; whether it got its documented status, with the server's message."""
    rows = []
    for case in cases:
        answer = case.send()
        detail = answer.payload.get("detail") if isinstance(answer.payload, dict) else answer.error
        rows.append(
            {
                "case": case.name,
                "expected": case.expected,
                "status": answer.status,
                "as_documented": answer.status == case.expected,
                "detail": str(detail)[:300],
            }
        )
    return rows
