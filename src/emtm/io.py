"""Atomic file writes: a file is either complete or absent, never half-written.

Each writer goes to a temp file beside the target, fsyncs it, renames it over the target and fsyncs the
folder, so that after a crash (even a power loss) the name points at the old or the new bytes, never at a
mix. A killed writer can leave a hidden `.NAME.*` temp file behind; it is never read and may be deleted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from emtm.errors import EmtmError


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside `directory` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and platforms) refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_path(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yield a temp path for libraries that write by file name (h5py, safetensors, matplotlib)."""
    return _atomic_path(Path(path))


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_markdown_table(
    path: str | os.PathLike, columns: list[str], rows: list[list[Any]], title: str = ""
) -> None:
    """A markdown table (floats with 2 decimals), optionally under a title line, written atomically."""
    lines = [title, ""] if title else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in rows
    ]
    with atomic_open(path) as handle:
        handle.write("\n".join(lines) + "\n")


def non_finite_field(obj: Any, where: str = "") -> tuple[str, float] | None:
    """The first (dotted field, value) of `obj` that is a NaN or infinite float, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where, obj
    if isinstance(obj, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for field, value in items:
        found = non_finite_field(value, field)
        if found is not None:
            return found
    return None


def read_json(path: str | os.PathLike, damaged: str = "the file is damaged") -> Any:
    """The JSON in `path`; a missing or unreadable file is an EmtmError naming it (`damaged`: what the
    message says to do about a file that is not valid JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmtmError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EmtmError(f"{path}: not valid JSON ({err}); {damaged}") from None


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """`obj` as JSON, written atomically. NaN and Infinity are refused (JSON has neither, and a metric
    that is not a number means something went wrong upstream): an EmtmError names the field."""
    bad = non_finite_field(obj)
    if bad is not None:
        raise EmtmError(
            f"{path}: not written, {bad[0] or 'the value'} is {bad[1]}; JSON holds no NaN or Infinity, "
            "and a result that is not a number means the computation went wrong upstream"
        )
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=indent, ensure_ascii=False, allow_nan=False)
        handle.write("\n")


def check_writable(path: str | os.PathLike, flag: str) -> None:
    """Before any work: that `path` (a file when it has a suffix, else a folder) can be written, by
    creating its folder and a scratch file there, then removing what the check created; an EmtmError
    names the flag and the reason."""
    target = Path(path)
    folder = target.parent if target.suffix else target
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if target.suffix and target.is_dir():
            raise IsADirectoryError(f"{target} is a folder")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".emtm-write-check-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise EmtmError(f"{flag} {path}: cannot write there ({reason}); choose a writable path") from None
    finally:
        for made in created:  # deepest first; the command creates them again when it writes
            with contextlib.suppress(OSError):
                made.rmdir()


def lock_file(path: str | os.PathLike, wait: bool = True) -> IO | None:
    """Open `path` (created if missing) and take an exclusive OS lock on it, shared by every process on
    this machine and released when the handle is closed or the process dies. `wait=False`: None at once
    when another handle holds the lock. Close the returned handle to release it."""
    import fcntl

    handle = open(path, "a")  # noqa: SIM115 - the caller closes it to release the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def claim(run_dir: str | os.PathLike, wait: bool = False) -> Iterator[bool]:
    """Hold the lock of a run folder (`NAME.lock` beside it) for the `with` block, so that only one
    process works on that run. Yields True while held; with wait=False, False at once when another
    process holds it; with wait=True, blocks until the lock is free. A dead process's lock is free."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_file(run_dir.parent / f"{run_dir.name}.lock", wait=wait)
    if lock is None:
        yield False
        return
    with lock:
        yield True
