"""`emtm serve` as a child process on a free loopback port, for the programs that drive a real server:
the load test (benchmarks/serve_load.py), the browser test (tests/test_serve_browser.py) and
benchmarks/grounder_clip.py. A helper module, not a script: benchmark scripts import it from their own
folder, the tests through tests/conftest.py (which puts benchmarks/ on sys.path)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import serve_loadtest
from emtm.errors import EmtmError


@dataclass
class Served:
    url: str
    exit_code: int | None = None  # set when the server has been stopped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen, wait_s: float = 20.0) -> int:
    """SIGTERM (the app's shutdown runs), then SIGKILL after `wait_s`; the exit code."""
    proc.terminate()
    try:
        return proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextlib.contextmanager
def serving(
    args: list[str], log: Path, wait_s: float = 120.0, threads: int | None = None
) -> Iterator[Served]:
    """`python -m emtm serve ARGS --port P` with its output in `log`; yields once GET /info answers, and
    stops it on exit. An EmtmError with the end of the log when it does not start within `wait_s`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with Path(log).open("w") as handle:
        cmd = [sys.executable, "-m", "emtm", "serve", *args, "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
    served = Served(url)
    try:
        deadline = time.monotonic() + wait_s
        while serve_loadtest.request(url, "GET", "/info", timeout=2).status != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise EmtmError(
                    f"emtm serve did not start within {wait_s:g} s: {Path(log).read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield served
    finally:
        served.exit_code = stop(proc)
