"""The web demo in a real headless browser: `emtm serve` runs as a subprocess on a free loopback port,
Debian's chromium (driven by playwright, never downloaded) loads the page, picks a generated video,
submits a query and waits for the answer. The highlighted moment must equal the JSON API's answer for
the same request, and clicking it must seek the video there. A screenshot is saved in the test's tmp
folder (and to docs/img/serve.png with EMTM_UPDATE_SCREENSHOT=1)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from test_serve_api import random_model

CHROMIUM = os.environ.get("EMTM_CHROMIUM", "/usr/bin/chromium")
FLAGS = [  # playwright adds --headless and --user-data-dir (a fresh one per test) itself
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]
QUERY = "a red square appears"


def require_browser() -> None:
    """Fail (not skip: a skip would hide a broken demo in CI) when the browser or its driver is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} not found: the web demo's browser test needs Debian chromium; install it with "
            "`apt-get update && apt-get install -y --no-install-recommends chromium` (.ci/run does), "
            "or point EMTM_CHROMIUM at a chromium binary"
        )
    for module in ("playwright", "fastapi", "uvicorn", "httpx2", "av"):
        try:
            __import__(module)
        except ImportError:
            pytest.fail(f"python package {module} missing: pip install -c constraints.txt -e '.[dev]'")


@contextmanager
def serving(tmp_path: Path, args: list[str]) -> Iterator[str]:
    """`emtm serve ARGS --cache TMP/cache` on a free loopback port; yields its URL. On exit it is stopped
    with SIGTERM, and its uploads folder must be gone (the app's shutdown deletes it)."""
    import serve_child

    args = [*args, "--cache", str(tmp_path / "cache")]
    with serve_child.serving(args, tmp_path / "serve.log", wait_s=90, threads=1) as served:
        yield served.url
    assert (tmp_path / "cache").is_dir() and not (tmp_path / "cache" / "uploads").exists()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    require_browser()
    from shape_videos import ShapeEvent, write_video

    model = random_model(tmp_path / "model")
    videos = tmp_path / "videos"
    events = [
        ShapeEvent("red", "square", 1.0, 4.0, 0.3, 0.3),
        ShapeEvent("blue", "circle", 4.5, 7.0, 0.7, 0.7),
    ]
    write_video(
        videos / "shapes.mp4", events, duration=8.0, size=96, fps=10, codec="libx264"
    )  # plays in chromium
    with serving(tmp_path, ["--model", str(model), "--videos", str(videos)]) as url:
        yield url


@contextmanager
def browser_page(tmp_path: Path) -> Iterator[tuple[object, list[str]]]:
    """A fresh page of headless Debian chromium and the list its JavaScript errors go to."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 900, "height": 1000},
        )  # fmt: skip
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            yield page, errors
        finally:
            browser.close()


def test_page_highlights_the_apis_moment_and_seeks_to_it(server: str, tmp_path: Path) -> None:
    import httpx2

    with browser_page(tmp_path) as (page, errors):
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert "efficientnet-lite0@32px" in page.inner_text("#model-info")
        assert page.locator("#teachers-panel").count() == 0  # not a distilled run: no such panel
        page.select_option("#video-select", "video:shapes.mp4")
        page.fill("#query", QUERY)
        page.fill("#top-k", "3")
        page.click("#submit")
        page.wait_for_selector("body[data-state='done'], body[data-state='error']", timeout=90_000)
        assert page.get_attribute("body", "data-state") == "done", page.inner_text("#status")
        shown = {
            "start": float(page.get_attribute("#best-moment", "data-start")),
            "end": float(page.get_attribute("#best-moment", "data-end")),
            "text": (page.inner_text("#best-start"), page.inner_text("#best-end")),
            "alternatives": page.locator("#alternatives li").count(),
            "curves": page.locator("#curves polyline").count(),
        }
        # the same request through the JSON API (its features now come from the cache)
        answer = httpx2.post(
            server + "/ground", json={"video": "shapes.mp4", "query": QUERY, "top_k": 3}, timeout=60
        ).json()
        best = answer["moments"][0]
        assert answer["cached"] is True and answer["duration"] == pytest.approx(8.0, abs=0.15)
        assert (shown["start"], shown["end"]) == (best["start"], best["end"])
        assert shown["text"] == (f"{best['start']:.2f}", f"{best['end']:.2f}")
        assert shown["alternatives"] == len(answer["moments"]) and shown["curves"] == 2
        # the highlight sits where the moment is on the timeline
        bar = page.locator("#timeline").bounding_box()
        box = page.locator("#best-moment").bounding_box()
        assert box["x"] - bar["x"] == pytest.approx(bar["width"] * best["start"] / answer["duration"], abs=2)
        # a click on the highlighted moment seeks the video to its start
        page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=30_000)
        page.click("#best-moment")
        page.wait_for_function(
            f"Math.abs(document.getElementById('player').currentTime - {best['start']}) < 0.05",
            timeout=10_000,
        )
        page.wait_for_function("(p => !p.seeking && p.readyState >= 2)(document.getElementById('player'))")
        assert not errors, errors
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("EMTM_UPDATE_SCREENSHOT") == "1":
            (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, REPO / "docs" / "img" / "serve.png")


def test_teachers_and_kau_panel_for_a_distilled_run(tiny_data: Path, tmp_path: Path) -> None:
    require_browser()
    import httpx2

    from test_serve_teachers import build_distilled_run

    run = build_distilled_run(tiny_data, tmp_path / "runs")
    with serving(tmp_path, ["--model", str(run)]) as url, browser_page(tmp_path) as (page, errors):
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        page.click("#teachers-panel summary")
        page.wait_for_selector("#teachers-panel[data-example='0'] #teacher-plots svg", timeout=10_000)
        example = httpx2.get(url + "/examples/0", timeout=30).json()
        plots = page.locator("#teacher-plots svg")
        assert plots.count() == len(example["teachers"]) + 2  # each teacher, the ensemble, the student
        assert [plots.nth(i).get_attribute("data-kind") for i in range(plots.count())] == [
            "teacher", "teacher", "ensemble", "student"
        ]  # fmt: skip
        assert page.locator("#teacher-plots svg polyline").count() == 2 * plots.count()
        headings = page.locator("#teacher-plots h3").all_inner_texts()
        weights = example["teachers"][0]["kau_weights"]
        assert headings[0] == (
            f"regress: KAU weight {weights['start']:.2f} (start), {weights['end']:.2f} (end)"
        )
        assert example["query"] in page.inner_text("#example-info")
        page.select_option("#example-select", "1")
        page.wait_for_selector("#teachers-panel[data-example='1']", timeout=10_000)
        assert httpx2.get(url + "/examples/1", timeout=30).json()["query"] in page.inner_text("#example-info")
        assert not errors, errors
        shot = tmp_path / "serve-teachers.png"
        page.locator("#teachers-panel").screenshot(path=str(shot))
        if os.environ.get("EMTM_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, REPO / "docs" / "img" / "serve-teachers.png")
