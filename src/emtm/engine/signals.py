"""SIGINT/SIGTERM during training: a flag the loop reads after each step, and the error the CLI turns
into exit code 128 + the signal after the checkpoint is saved (docs/RELIABILITY.md)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from emtm.engine import distributed
from emtm.errors import EmtmError


class TrainingStopped(EmtmError):
    """SIGINT/SIGTERM stopped the run after saving a checkpoint; the CLI exits with 128 + the signal."""

    def __init__(self, message: str, signum: int, saved: str = ""):
        super().__init__(message)
        self.signum, self.saved = signum, saved
        self.exit_code = 128 + signum

    def rerun(self, command: str) -> TrainingStopped:
        """The same stop, with the advice for a command that runs many trainings (ablate, recipe)."""
        return TrainingStopped(
            f"stopped by {signal.Signals(self.signum).name}; checkpoint saved: {self.saved}. Run the same "
            f"{command} command again to continue: finished runs are kept, and this one resumes from its "
            "checkpoint",
            self.signum,
            self.saved,
        )


class StopRequest:
    """SIGINT/SIGTERM become a flag that the loop reads after each step; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, keep the last complete checkpoint
            return
        self.signum = signum
        if distributed.is_main_process():
            name = signal.Signals(signum).name
            print(f"emtm: {name} received; saving a checkpoint after the current step", file=sys.stderr)

    @property
    def requested(self) -> bool:
        return self.signum is not None


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the main process, which checkpoints and shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
