"""Raw video -> features -> training -> grounding, for real, on generated videos with known content.

40 videos of 8-12 s (64x64 px): a red square, a blue circle and a green triangle each appear for 2-5 s
at random times, one query each ("a red square appears."). EfficientNet-Lite0 features at 2 fps (64 px
input, to stay fast on one core), the prior baseline and a small student trained with the engine, and
the evaluator on the 10 held-out videos (30 queries). About 40 s on one CPU core; the full-size check
is benchmarks/video_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("efficientnet_lite_pytorch")

from emtm.api import Grounder  # noqa: E402
from emtm.cli import main  # noqa: E402
from shapes_e2e import run_shapes_check  # noqa: E402


def test_student_trained_on_extracted_features_grounds_held_out_queries(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = run_shapes_check(tmp_path, n_videos=40, fps=2.0, image_size=64, epochs=15, device="cpu")
    prior, student, control = report["prior"], report["student"], report["student_shuffled"]
    assert student["n_queries"] == prior["n_queries"] == 30
    assert student["miou"] > 55 and student["miou"] > prior["miou"] + 20, (student, prior)
    assert student["r1@0.5"] > prior["r1@0.5"] + 20, (student, prior)
    # the student reads the video: with another video's features it is no better than the prior
    assert control["miou"] < student["miou"] - 20, (control, student)

    index = json.loads((tmp_path / "features" / "features.json").read_text())
    assert (index["backbone"], index["dim"], index["fps"], index["clip_seconds"]) == (
        "efficientnet-lite0@64px",
        1280,
        2.0,
        0.5,
    )
    durations = json.loads((tmp_path / "data" / "durations.json").read_text())
    for vid, record in index["videos"].items():  # one row per 0.5 s of video, matching the annotations
        assert record["duration"] == pytest.approx(durations[vid])
        assert record["clips"] == record["frames"] == int(np.ceil(durations[vid] * 2 - 1e-6))
        assert np.load(tmp_path / "features" / f"{vid}.npy").shape == (record["clips"], 1280)

    # `emtm ground` on a held-out video file: it extracts the features the student was trained on
    # (efficientnet-lite0 at 64 px, 2 fps, 0.5 s clips, all read from the run) and grounds the sentences
    lines = (tmp_path / "data" / "test.txt").read_text().splitlines()[:3]
    vid = lines[0].split()[0]
    queries = [line.split("##")[1] for line in lines]
    video = tmp_path / "data" / "videos" / f"{vid}.mp4"
    args = ["ground", "--model", str(tmp_path / "student"), "--video", str(video), "--top-k", "1"]
    assert main([*args, "--device", "cpu", *[x for q in queries for x in ("--query", q)]]) == 0
    out = capsys.readouterr().out
    assert f"{video}: {durations[vid]:.2f} s, {index['videos'][vid]['clips']} clips of 0.5 s" in out
    grounder = Grounder.load(tmp_path / "student", device="cpu")
    stored = np.load(tmp_path / "features" / f"{vid}.npy")
    for query in queries:
        best = grounder.ground(stored, query, duration=durations[vid])
        assert f"{best.start:.2f}" in out and f"{best.end:.2f}" in out, (query, best, out)
