"""Crash-safe training: SIGKILL mid-epoch (even mid-write), SIGTERM, NaN losses, damaged checkpoints.

Every resumed run must end with exactly the weights of an uninterrupted one (CPU, one thread).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emtm.cli import build_parser, main, train_config_from_args
from emtm.engine.checkpoint import load_train_state
from emtm.engine.train import train
from emtm.errors import EmtmError
from emtm.io import atomic_open, write_json
from emtm.models.student import Student

ARGS = [
    "--epochs", "2", "--batch-size", "16", "--lr", "2e-3", "--device", "cpu", "--no-progress",
    "--set", "model_options.d=32", "--set", "model_options.n_heads=4",
    "--set", "run.threads=1", "--set", "run.checkpoint_every=2",
]  # fmt: skip
STEPS_PER_EPOCH = 8  # 124 training queries of the tiny preset, batch 16

# The child is the real CLI (`python -m emtm train ...`) with one fault injected, so the test can act at a
# known moment without timing guesses: "hang-mid-write" writes half of the 2nd checkpoint (step 4, epoch 1)
# to its temp file and hangs there; "slow" sleeps before every batch from the 3rd on.
CHILD = """
import os, sys, time
import torch
mode, marker = os.environ["EMTM_FAULT"], os.environ["EMTM_FAULT_MARKER"]
calls = [0]
if mode == "hang-mid-write":
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        real_save(obj, f, *args, **kwargs)
        if calls[0] == 2:
            data = open(f, "rb").read()
            open(f, "wb").write(data[: len(data) // 2])
            open(marker, "w").close()
            time.sleep(600)
    torch.save = save
else:
    import emtm.engine.train as loop
    real_to_device = loop.to_device
    def slow(batch, device):
        calls[0] += 1
        if calls[0] >= 3:
            open(marker, "a").close()
            time.sleep(0.5)
        return real_to_device(batch, device)
    loop.to_device = slow
from emtm.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def cli_config(data: Path, out: Path):
    return train_config_from_args(
        build_parser().parse_args(["train", "--data", str(data), "--out", str(out), *ARGS])
    )


@pytest.fixture(scope="module")
def reference(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, in-process, with the config the CLI children build."""
    out = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    train(cli_config(tiny_data, out), out)
    torch.set_num_threads(threads)
    return out


def assert_same_run(run: Path, reference: Path) -> None:
    a, b = load_file(reference / "last.safetensors"), load_file(run / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert strip(history) == strip(json.loads((reference / "metrics.json").read_text())["history"])


def start_child(mode: str, data: Path, out: Path, marker: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMTM_FAULT": mode, "EMTM_FAULT_MARKER": str(marker)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, "train", "--data", str(data), "--out", str(out), *ARGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, child: subprocess.Popen, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if child.poll() is not None:
            pytest.fail(f"child ended early ({child.returncode}): {child.stderr.read()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("the child never reached the fault point")
        time.sleep(0.02)


def test_sigkill_mid_epoch_while_writing_resumes_to_the_same_weights(
    tiny_data: Path, tmp_path: Path, reference: Path
) -> None:
    out, marker = tmp_path / "run", tmp_path / "marker"
    child = start_child("hang-mid-write", tiny_data, out, marker)
    wait_for(marker, child)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL

    leftovers = [p for p in out.iterdir() if p.name.startswith(".last_state.pt.")]
    assert leftovers, "the half-written temp file should still be there"
    state = load_train_state(out)  # the last *complete* checkpoint: step 2 of epoch 1
    assert (state["epoch"], state["batch"], state["finished"]) == (0, 2, False)
    assert not (out / "last.safetensors").exists()  # no epoch had finished

    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--resume"]) == 0
    assert_same_run(out, reference)


def test_sigterm_saves_the_current_step_and_exits_cleanly(
    tiny_data: Path, tmp_path: Path, reference: Path
) -> None:
    out, marker = tmp_path / "run", tmp_path / "marker"
    child = start_child("slow", tiny_data, out, marker)
    wait_for(marker, child)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr and "error" not in stderr

    state = load_train_state(out)
    assert state["epoch"] == 0 and not state["finished"] and 3 <= state["batch"] < STEPS_PER_EPOCH
    assert f"epoch 1, batch {state['batch']}" in stderr
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--resume"]) == 0
    assert_same_run(out, reference)


def test_nan_loss_stops_with_epoch_step_and_samples_and_keeps_the_good_checkpoint(
    tiny_data: Path, tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    cfg = cli_config(tiny_data, out)
    real_loss, calls = Student.loss, [0]

    def loss(self, outputs, batch):
        calls[0] += 1
        total, parts = real_loss(self, outputs, batch)
        return (total * float("nan") if calls[0] == STEPS_PER_EPOCH + 3 else total), parts

    monkeypatch.setattr(Student, "loss", loss)
    with pytest.raises(EmtmError) as info:
        train(cfg, out)
    message = str(info.value)
    assert "loss is nan at epoch 2, batch 3 of 8 (global step 11" in message
    samples = {line.split()[0] for line in (tiny_data.parent / "train.txt").read_text().splitlines()}
    assert any(f"{video}_" in message for video in samples)  # names the batch's sample ids
    assert "epoch 2, batch 2" in message  # ... and the checkpoint that is kept

    state = load_train_state(out)
    assert (state["epoch"], state["batch"], state["finished"]) == (1, 2, False)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    monkeypatch.setattr(Student, "loss", real_loss)
    train(cfg, out, resume=True)
    assert_same_run(out, reference)


def test_a_damaged_checkpoint_fails_with_a_clear_message(
    tiny_data: Path, tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    good = (reference / "last_state.pt").read_bytes()
    for damaged in (good[: len(good) // 2], b"\x00" * 100, b""):
        (run / "last_state.pt").write_bytes(damaged)
        with pytest.raises(EmtmError, match=r"last_state\.pt: checkpoint cannot be read .*damaged"):
            load_train_state(run)
    torch.save({"weights": torch.zeros(2)}, run / "last_state.pt")
    with pytest.raises(EmtmError, match="not an emtm training state"):
        load_train_state(run)
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--resume"]) == 2
    assert "emtm train: error:" in capsys.readouterr().err
    (run / "last_state.pt").write_bytes(good)
    (run / "config.json").write_text('{"train": ', encoding="utf-8")  # cut short: name the file
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--resume"]) == 2
    assert "config.json: not valid JSON" in capsys.readouterr().err
    (run / "config.json").unlink()  # a state without the run's settings: say so, not "nothing to resume"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--resume"]) == 2
    assert "holds last_state.pt but no config.json" in capsys.readouterr().err
    (run / "last_state.pt").unlink()
    with pytest.raises(EmtmError, match="nothing to resume"):
        load_train_state(run)


def test_atomic_writes_fsync_the_file_and_its_folder_and_never_leave_half_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"old": True})
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json(target, {"new": True})
    assert synced == [False, True]  # the temp file, then the folder holding the rename

    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write('{"half": ')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_sigkill_at_random_moments_leaves_a_resumable_checkpoint_or_nothing(
    tiny_data: Path, tmp_path: Path, reference: Path
) -> None:
    """Three SIGKILLs at seeded random moments of real `emtm train` processes (the "slow" child makes a
    batch last 0.5 s so the kills land inside training). After each, either no checkpoint exists yet, or
    the last complete one loads; resuming from whatever is left ends on the uninterrupted run's weights."""
    import random

    out, marker = tmp_path / "run", tmp_path / "marker"
    rng = random.Random(7)
    kills = []
    for _ in range(3):
        resume = (out / "last_state.pt").exists()
        argv = [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            *ARGS,
            *(["--resume"] if resume else []),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "EMTM_FAULT": "slow", "EMTM_FAULT_MARKER": str(marker)}
        child = subprocess.Popen([sys.executable, "-c", CHILD, *argv], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(rng.uniform(0.5, 4.0))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        kills.append(child.returncode)
        if (out / "last_state.pt").exists():
            state = load_train_state(out)  # never a corrupt file: the last complete checkpoint
            assert 0 <= state["epoch"] <= 2 and state["batch"] <= STEPS_PER_EPOCH
        for temp in out.glob(".*.tmp*"):  # a kill mid-write leaves at most a hidden temp file
            assert not temp.name.startswith(("last_state.pt", "model.safetensors"))
    assert kills.count(-signal.SIGKILL) >= 2, kills  # most kills landed before the run could finish
    resume = ["--resume"] if (out / "last_state.pt").exists() else ["--overwrite"]
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *ARGS, *resume]) == 0
    assert_same_run(out, reference)
