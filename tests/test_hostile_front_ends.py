"""Property-based: the front ends (the Grounder, prediction files for evaluate, the HTTP API) give a valid
answer or a clear error for any input, never an uncaught exception, a NaN or an empty result."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from emtm.errors import EmtmError

DIM, WORDS = 16, ["a", "red", "square", "appears", "person", "sits"]


def hostile(max_examples: int) -> settings:
    checks = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=timedelta(seconds=30),
        suppress_health_check=checks,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emtm.engine.export import write_random_model

    return write_random_model(tmp_path_factory.mktemp("model") / "m", WORDS, video_dim=DIM, max_video_len=16)


SENTENCES = st.one_of(
    st.just(""), st.just("   "), st.text(max_size=40), st.text(alphabet="人が座るпривет", max_size=20),
    st.just("a red square appears " * 60), st.sampled_from(["a red square appears", "a person sits"]),
)  # fmt: skip
FEATURES = st.one_of(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40).map(lambda s: (s[0], DIM)),
               elements=st.floats(-1e6, 1e6, width=32)),
    hnp.arrays(st.sampled_from([np.float64, np.int64, np.float16, np.bool_, np.uint8]),
               st.tuples(st.integers(0, 30), st.sampled_from([DIM, DIM - 1, 1]))),
    hnp.arrays(np.float32, st.tuples(st.integers(1, 20), st.just(DIM)),
               elements=st.sampled_from([0.0, 1.0, np.nan, np.inf, -np.inf, 1e38])),
    st.lists(st.lists(st.floats(allow_nan=True), max_size=DIM + 1), max_size=5),  # ragged lists
)  # fmt: skip
GOOD_FEATURES = hnp.arrays(
    np.float32, st.tuples(st.integers(1, 60), st.just(DIM)), elements=st.floats(0, 20, width=32)
)
GOOD_SENTENCES = st.sampled_from(["a red square appears", "a person sits", "the red one, then the square"])
DURATIONS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6))


@hostile(60)
@given(
    features=st.one_of(GOOD_FEATURES, GOOD_FEATURES, FEATURES),
    query=st.one_of(GOOD_SENTENCES, SENTENCES),
    duration=st.one_of(st.floats(1.0, 500.0), DURATIONS),
    top_k=st.one_of(st.integers(1, 8), st.integers(-2, 0)),
)
def test_the_grounder_answers_or_refuses(model_dir: Path, features, query, duration, top_k) -> None:
    from emtm.api import Grounder

    grounder = Grounder.load(model_dir, device="cpu")
    try:
        moments = grounder.ground(features, query, duration=duration, top_k=top_k)
    except EmtmError as err:
        event(f"refused: {type(err).__name__}")
        assert str(err)
        return
    moments = moments if isinstance(moments, list) else [moments]
    assert moments, "an answer is never empty"
    for m in moments:
        assert all(math.isfinite(v) for v in (m.start, m.end, m.score)) and 0 <= m.start < m.end


WINDOWS = st.one_of(
    st.lists(st.lists(st.floats(allow_nan=True), max_size=4), max_size=3), st.text(max_size=5)
)
LINES = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda q, w: json.dumps({"qid": q, "vid": "v", "query": "x", "pred_relevant_windows": w}),
        st.sampled_from(["q0", "q1", "zz", ""]),
        WINDOWS,
    ),
)


@hostile(60)
def both_queries(windows: tuple) -> list[str]:
    return [json.dumps({"qid": f"q{i}", "vid": "v", "query": "x", "pred_relevant_windows": w})
            for i, w in enumerate(windows)]  # fmt: skip


PLAUSIBLE = st.lists(
    st.tuples(st.floats(-5, 40), st.floats(-5, 40), st.floats(0, 1)).map(list), min_size=1, max_size=3
)


@given(
    lines=st.one_of(st.lists(LINES, max_size=4), st.tuples(PLAUSIBLE, PLAUSIBLE).map(both_queries)),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_evaluate_scores_a_prediction_file_or_refuses(tmp_path_factory, lines, bom, crlf) -> None:
    from emtm.engine.evaluate import score_predictions
    from emtm.engine.predictions import read_predictions

    folder = tmp_path_factory.mktemp("preds")
    gt = folder / "gt.jsonl"
    truth = [{"qid": f"q{i}", "vid": "v", "query": "x", "duration": 30.0, "relevant_windows": [[1.0, 5.0]]}
             for i in range(2)]  # fmt: skip
    gt.write_text("".join(json.dumps(t) + "\n" for t in truth))
    text = ("\r\n" if crlf else "\n").join(lines)
    (folder / "p.jsonl").write_bytes(
        (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass")
    )
    try:
        metrics = score_predictions(read_predictions(folder / "p.jsonl", gt_path=gt))
    except EmtmError as err:
        event(f"refused: {type(err).__name__}")
        assert "p.jsonl" in str(err) or "gt.jsonl" in str(err)
        return
    assert metrics["n_queries"] == 2 and all(
        math.isfinite(v) for v in metrics.values() if isinstance(v, float)
    )


BODY_FEATURES = st.one_of(
    st.just([[0.5] * DIM] * 4),
    st.just([[0.5] * DIM] * 4),
    st.just([[0.1 * i] * DIM for i in range(40)]),
    st.lists(st.lists(st.floats(), max_size=3), max_size=3),
    st.just([[float("nan")] * DIM] * 2),
    st.text(max_size=5),
)
OPTIONAL = {
    "features": BODY_FEATURES,
    "duration": DURATIONS,
    "top_k": st.one_of(st.integers(-3, 40), st.booleans(), st.text(max_size=3)),
    "video": st.one_of(st.text(max_size=12), st.just("../x.mp4")),
    "junk": st.integers(),
}
BODIES = st.one_of(
    st.text(max_size=50).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.fixed_dictionaries({"query": SENTENCES}, optional=OPTIONAL).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(
        {"query": GOOD_SENTENCES, "features": BODY_FEATURES, "duration": st.floats(1.0, 100.0)},
        optional={"top_k": st.integers(-1, 25)},
    ).map(lambda d: json.dumps(d).encode()),
)


@hostile(60)
@given(body=BODIES)
def test_the_http_api_never_answers_500(model_dir: Path, body: bytes) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from emtm.serve import create_app

    client = TestClient(
        create_app(model_dir, None, cache_dir=model_dir.parent / "cache"), raise_server_exceptions=False
    )
    response = client.post("/ground", content=body, headers={"content-type": "application/json"})
    event(f"status {response.status_code}")
    assert response.status_code in (200, 400, 404, 413, 422), response.text
    if response.status_code == 200:
        moments = response.json()["moments"]
        assert moments and all(math.isfinite(m["score"]) for m in moments)
    else:
        assert response.json()["detail"]
