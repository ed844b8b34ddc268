"""Server under load: `emtm serve` as a subprocess on a free loopback port, N concurrent HTTP clients.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --out runs/bench/serve-load
    # defaults: 16 clients, 2,000 requests, 120 s cap, 64 distinct requests over 4 videos + features

Builds a random-weight student with a recorded feature spec (EfficientNet-Lite0 at 32 px, 2 fps), writes
generated shape videos into a served folder, starts `emtm serve`, then:

1. sends each distinct request alone, one after the other: its answer is that request's reference (the
   videos are extracted and cached here; the features requests are also checked against `Grounder`);
2. the load: N clients send the requests round robin until the count or the time cap; every answer must
   echo its own query and give exactly its reference moments (start, end, score);
3. the limits: requests over each size limit, a refused name, a bad top_k, each with its documented
   status; then a burst of extraction requests on uncached videos, more than --max-extract-jobs at once
   (each must get 200 or 429 with Retry-After);
4. the same requests once more, to show the server still answers correctly after all that.

Writes OUT/serve_load.json and OUT/serve_load.md and prints the tables. The small version runs in CI:
tests/test_serve_load.py. Correctness does not need trained weights: each answer is compared with what
the same model gives for the same request alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import serve_child
import serve_loadtest
from emtm.device import cpu_model
from emtm.engine.export import write_random_model
from emtm.errors import EmtmError
from emtm.io import atomic_open, write_json

COLOURS = ("red", "green", "blue")
SHAPES = ("square", "circle", "triangle")
VERBS = ("appears", "disappears", "moves left", "moves right", "grows", "shrinks")
ADVERBS = ("", " slowly", " quickly", " again")
WORDS = ["a", "the", *COLOURS, *SHAPES, "appears", "disappears", "moves", "left", "right", "grows", "shrinks"]
WORDS += ["slowly", "quickly", "again"]
SPEC = {"backbone": "efficientnet-lite0@32px", "fps": 2.0, "clip_seconds": 0.5}
DIM = 1280
FEATURE_CLIPS = 16


def machine() -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, OMP_NUM_THREADS={threads}"


def queries() -> list[str]:
    """Distinct sentences in the model's vocabulary (each gives its own answer)."""
    combos = itertools.product(ADVERBS, ("a", "the"), COLOURS, SHAPES, VERBS)
    return [f"{det} {colour} {shape} {verb}{adverb}" for adverb, det, colour, shape, verb in combos]


def write_model(out: Path) -> Path:
    """A random-weight student on 1280-d features that records the 32-px EfficientNet-Lite0 spec."""
    path = write_random_model(out, WORDS, video_dim=DIM, max_video_len=32)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config["features"].update(SPEC)
    with atomic_open(path / "config.json") as handle:
        json.dump(config, handle, indent=2)
    return path


def write_videos(folder: Path, prefix: str, count: int, seed: int, duration: float) -> list[str]:
    """`count` generated shape videos (different content each) in `folder`; their names."""
    from shape_videos import EVENTS, ShapeEvent, write_video

    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        events = []
        for colour, shape in EVENTS:
            start = float(rng.uniform(0, duration - 2))
            end = float(min(duration, start + rng.uniform(1.5, 4)))
            events.append(ShapeEvent(colour, shape, start, end, *map(float, rng.uniform(0.3, 0.7, 2))))
        name = f"{prefix}{i}.mp4"
        write_video(folder / name, events, duration=duration, size=64, fps=10)
        names.append(name)
    return names


def load_bodies(videos: list[str], distinct: int, features_share: float, seed: int) -> list[dict[str, Any]]:
    """`distinct` POST /ground bodies, one query each: most on the served videos (round robin), a share
    with precomputed features (16 clips, values rounded to 3 decimals to keep the JSON small)."""
    sentences = queries()
    if not 1 <= distinct <= len(sentences):
        raise EmtmError(f"--distinct {distinct}: must be between 1 and {len(sentences)} (distinct queries)")
    rng = np.random.default_rng(seed)
    n_features = round(distinct * features_share) if videos else distinct
    bodies: list[dict[str, Any]] = []
    for i, query in enumerate(sentences[:distinct]):
        if i < distinct - n_features:
            bodies.append({"video": videos[i % len(videos)], "query": query, "top_k": 3})
        else:
            features = np.round(rng.normal(size=(FEATURE_CLIPS, DIM)), 3).tolist()
            bodies.append({"features": features, "duration": FEATURE_CLIPS / 2, "query": query, "top_k": 3})
    return bodies


def same_moments(moments: list[Any], reference: list[dict[str, float]]) -> bool:
    """The same windows, and scores equal to float rounding: a process with another CPU thread count
    sums in another order (the server and this process need not have the same count)."""
    return len(moments) == len(reference) and all(
        m.start == r["start"] and m.end == r["end"] and math.isclose(m.score, r["score"], rel_tol=1e-5)
        for m, r in zip(moments, reference)
    )


def check_with_grounder(model: Path, bodies: list[dict[str, Any]], references: list[Any]) -> dict[str, int]:
    """The features requests' references against `Grounder` in this process (the server must agree)."""
    from emtm.api import Grounder

    grounder = Grounder.load(model, device="cpu")
    checked = equal = 0
    for body, reference in zip(bodies, references, strict=True):
        if "features" not in body:
            continue
        features = np.asarray(body["features"], dtype=np.float32)
        moments = grounder.ground(features, body["query"], duration=body["duration"], top_k=body["top_k"])
        checked += 1
        equal += same_moments(moments, reference)
    return {"checked": checked, "equal": equal}


def extraction_burst(url: str, videos: list[str], info: dict[str, Any]) -> dict[str, Any]:
    """All `videos` (not yet extracted) at once: each must get 200 or 429 with Retry-After."""
    bodies = [{"video": name, "query": f"a red square appears #{i}"} for i, name in enumerate(videos)]
    answers = serve_loadtest.burst(url, bodies)
    statuses = [a.status for a in answers]
    counts = {str(k): statuses.count(k) for k in sorted(set(statuses), key=str)}
    documented = all(
        a.status == 200 or (a.status == 429 and a.headers.get("retry-after") == "5") for a in answers
    )
    cap = info["limits"]["max_extract_jobs"]
    return {"requests": len(bodies), "cap": cap, "statuses": counts, "as_documented": documented}


def run(
    out: str | Path,
    clients: int = 16,
    total: int = 2000,
    max_seconds: float = 120.0,
    distinct: int = 64,
    n_videos: int = 4,
    burst: int = 8,
    features_share: float = 0.25,
    serve_flags: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole benchmark in `out`; the report (also written to serve_load.json / serve_load.md)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    model = write_model(out / "model")
    videos_dir = out / "videos"
    videos_dir.mkdir(exist_ok=True)
    load_videos = write_videos(videos_dir, "load", n_videos, seed, duration=12.0)
    burst_videos = write_videos(videos_dir, "burst", burst, seed + 1, duration=30.0)
    bodies = load_bodies(load_videos, distinct, features_share, seed)
    cache = out / "cache"
    for old in (cache / "features").glob("*") if cache.is_dir() else ():
        old.unlink()  # a rerun extracts again, so that the burst meets uncached videos
    args = ["--model", str(model), "--videos", str(videos_dir), "--cache", str(cache), *(serve_flags or [])]
    say("starting emtm serve")
    started = time.perf_counter()
    report: dict[str, Any] = {"machine": machine(), "command": " ".join(sys.argv)}
    with serve_child.serving(args, out / "serve.log") as served:
        url = report["url"] = served.url
        report["startup_seconds"] = round(time.perf_counter() - started, 2)
        info = serve_loadtest.get_json(url, "/info")
        report["limits"] = info["limits"]
        say(f"[1/4] {len(bodies)} reference answers, one request at a time")
        started = time.perf_counter()
        references = serve_loadtest.reference_answers(url, bodies)
        report["reference"] = {
            "requests": len(bodies),
            "video_requests": sum("video" in b for b in bodies),
            "feature_requests": sum("features" in b for b in bodies),
            "distinct_answers": len({json.dumps(r) for r in references}),
            "seconds": round(time.perf_counter() - started, 2),
            "grounder": check_with_grounder(model, bodies, references),
        }
        say(f"[2/4] load: {clients} clients, {total} requests, {max_seconds:g} s cap")
        with tqdm(total=total, desc="requests", disable=not progress, leave=False) as bar:
            report["load"] = serve_loadtest.run_load(
                url, bodies, references, clients, total, max_seconds, on_answer=lambda: bar.update(1),
                groups=["features" if "features" in b else "video" for b in bodies],
            )  # fmt: skip
        say("[3/4] limits")
        report["limits_checks"] = serve_loadtest.run_limit_cases(
            serve_loadtest.limit_cases(url, info, load_videos[0])
        )
        report["extraction_burst"] = extraction_burst(url, burst_videos, info)
        say("[4/4] the same requests again after the limits")
        report["after"] = serve_loadtest.run_load(url, bodies, references, clients, len(bodies), max_seconds)
    report["server_exit"] = served.exit_code
    log = (out / "serve.log").read_text(errors="replace")
    report["server_log_tracebacks"] = log.count("Traceback")
    write_json(out / "serve_load.json", report)
    with atomic_open(out / "serve_load.md") as handle:
        handle.write(markdown(report))
    return report


def load_row(name: str, load: dict[str, Any]) -> list[Any]:
    lat = load["latency_ms"]
    errors = ", ".join(f"{k}: {v}" for k, v in load["errors_by_kind"].items()) or "0"
    lost = load["lost"]
    return [name, load["clients"], load["sent"], load["ok"], errors, lost, load["mismatched"],
            lat["p50"], lat["p90"], lat["p99"], lat["max"], load["requests_per_s"]]  # fmt: skip


def load_rows(report: dict[str, Any]) -> list[list[Any]]:
    return [load_row("load", report["load"]), load_row("after the limits", report["after"])]


LOAD_COLUMNS = ["phase", "clients", "sent", "ok", "errors", "lost", "mismatched", "p50 ms", "p90 ms",
                "p99 ms", "max ms", "requests/s"]  # fmt: skip
LIMIT_COLUMNS = ["request over a limit", "documented", "got", "as documented"]


def limit_rows(report: dict[str, Any]) -> list[list[Any]]:
    rows = [[c["case"], c["expected"], c["status"], "yes" if c["as_documented"] else "NO"]
            for c in report["limits_checks"]]  # fmt: skip
    burst = report["extraction_burst"]
    got = ", ".join(f"{v} x {k}" for k, v in burst["statuses"].items())
    name = f"{burst['requests']} extractions at once (cap {burst['cap']})"
    rows.append([name, "200 or 429", got, "yes" if burst["as_documented"] else "NO"])
    return rows


def markdown(report: dict[str, Any]) -> str:
    def table(columns: list[str], rows: list[list[Any]]) -> list[str]:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]

    ref = report["reference"]
    lines = [
        f"emtm serve under load on loopback; {report['machine']}",
        "",
        *table(LOAD_COLUMNS, load_rows(report)),
        "",
        f"{ref['requests']} distinct requests ({ref['video_requests']} on served videos, "
        f"{ref['feature_requests']} with features; {ref['distinct_answers']} distinct answers), "
        f"{report['load']['stopped_by']} reached in {report['load']['seconds']} s; "
        f"server tracebacks: {report['server_log_tracebacks']}.",
        "Load latency by kind: "
        + "; ".join(
            f"{k} requests {g['ok']} ok, p50 {g['latency_ms']['p50']} ms, p99 {g['latency_ms']['p99']} ms"
            for k, g in report["load"]["by_group"].items()
        )
        + ".",
        "",
        *table(LIMIT_COLUMNS, limit_rows(report)),
    ]
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any]) -> None:
    from emtm.console import print_table

    print_table(f"emtm serve under load; {report['machine']}", LOAD_COLUMNS, load_rows(report))
    print_table("limits", LIMIT_COLUMNS, limit_rows(report))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench/serve-load")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=2000, help="total requests of the load phase")
    p.add_argument("--max-seconds", type=float, default=120.0, help="time cap of the load phase")
    p.add_argument("--distinct", type=int, default=64, help="distinct requests (one query each)")
    p.add_argument("--videos", type=int, default=4, help="served videos the requests use")
    p.add_argument("--burst", type=int, default=8, help="uncached videos requested at once")
    p.add_argument("--features-share", type=float, default=0.25, help="share of requests with features")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("serve_flags", nargs="*", help="after --: flags for emtm serve, e.g. -- --max-body-kb 64")
    args = p.parse_args()
    report = run(args.out, args.clients, args.requests, args.max_seconds, args.distinct, args.videos,
                 args.burst, args.features_share, args.serve_flags, args.seed)  # fmt: skip
    print_report(report)
    print(f"wrote {Path(args.out) / 'serve_load.json'} and serve_load.md")


if __name__ == "__main__":
    main()
