"""Raw video -> features -> training -> grounding, on generated videos whose content is known.

`run_shapes_check` writes videos in which a red square, a blue circle and a green triangle each appear
for 2-5 s at random times (benchmarks/shape_videos.py), with Charades-STA annotations "a red square
appears." and the true times; extracts their features with a frame backbone (`emtm extract`'s code);
trains the `prior` baseline and the student with the engine; and scores both on the held-out test
videos with the evaluator. A student that grounds the sentences in the extracted features beats the
prior (which ignores the video and the sentence) by a wide margin; as a control, the same student given
another test video's features (`student_shuffled`) falls back to about the prior. Used by
tests/test_video_e2e.py (small), benchmarks/video_e2e.py (full size) and benchmarks/grounder_clip.py.
A helper module of benchmarks/, not a script (the tests import it through tests/conftest.py).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from emtm.config import TrainConfig
from emtm.data.dataset import split_dataset
from emtm.device import resolve_device
from emtm.engine.checkpoint import load_run
from emtm.engine.evaluate import predict_dataset, score_predictions
from emtm.engine.train import train
from emtm.extract.backbones import build_backbone
from emtm.extract.extractor import extract_videos
from shape_videos import write_data_yaml, write_dataset


def run_shapes_check(
    out: str | Path,
    n_videos: int = 40,
    fps: float = 2.0,
    clip_seconds: float | None = None,
    image_size: int | None = 64,
    video_size: int = 64,
    backbone: str = "efficientnet-lite0",
    epochs: int = 15,
    student_options: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Generate, extract, train prior and student, evaluate on test; returns metrics and timings."""
    out = Path(out)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    root = write_dataset(out / "data", n_videos=n_videos, seed=seed, size=video_size)
    timings["generate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    dev = resolve_device(device)
    net = build_backbone(backbone, device=dev, image_size=image_size)
    results = extract_videos(
        [root / "videos"], out / "features", net, fps=fps, clip_seconds=clip_seconds, progress=progress
    )
    failed = [r.error for r in results if r.status == "failed"]
    if failed:
        raise RuntimeError(f"extraction failed: {failed}")
    timings["extract_s"] = time.perf_counter() - started
    data_yaml = write_data_yaml(root, out / "features", max_video_len=64)

    report: dict[str, Any] = {
        "videos": n_videos,
        "frames": sum(r.record["frames"] for r in results),
        "backbone": net.name,
        "dim": net.dim,
        "fps": fps,
        "image_size": image_size,
        "device": dev.type,
        "data": str(data_yaml),
    }
    options = {"d": 32, "n_heads": 4, **(student_options or {})}
    for model, n_epochs, opts in (("prior", 1, {}), ("student", epochs, options)):
        cfg = TrainConfig(
            data=str(data_yaml),
            model=model,
            model_options=opts,
            optim={"epochs": n_epochs, "batch_size": 16, "lr": 2e-3, "warmup_epochs": 1},
            run={"progress": progress, "device": device, "seed": seed},
        )
        started = time.perf_counter()
        train(cfg, out / model, overwrite=True)
        timings[f"train_{model}_s"] = time.perf_counter() - started
        run = load_run(out / model, device=dev)
        test = split_dataset(data_yaml, "test", run.vocab, seed)
        preds = predict_dataset(run.model, test, run.cfg.eval, dev, batch_size=64)
        report[model] = score_predictions(preds)
    # control: the same student on the test queries, each test video given another test video's features
    test_ids = sorted({s.video_id for s in test.samples})
    shuffled = out / "features_shuffled"
    shuffled.mkdir(parents=True, exist_ok=True)
    for vid, other in zip(test_ids, test_ids[1:] + test_ids[:1]):
        shutil.copyfile(out / "features" / f"{other}.npy", shuffled / f"{vid}.npy")
    control_yaml = write_data_yaml(root, shuffled, max_video_len=64, name="data_shuffled.yaml")
    control = split_dataset(control_yaml, "test", run.vocab, seed)
    report["student_shuffled"] = score_predictions(
        predict_dataset(run.model, control, run.cfg.eval, dev, batch_size=64)
    )
    report["timings"] = {k: round(v, 2) for k, v in timings.items()}
    report["threads"] = torch.get_num_threads()
    return report
