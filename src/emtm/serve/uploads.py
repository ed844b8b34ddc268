"""The uploads of `emtm serve`: received into one folder under their content hash (`store_upload`), kept
capped in number and bytes (the video files plus their extracted features), least recently used evicted
first, and all deleted when the server stops.

Each server keeps its uploads in a folder of its own under the cache's `uploads/` (`UploadSession`),
locked for the server's life, so servers that share one cache never delete each other's uploads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path

from emtm.io import lock_file
from emtm.serve.limits import Refused, body_too_large, check_name, resolve_inside

_HASH_NAME = re.compile(r"[0-9a-f]{32}")


@dataclass
class Upload:
    sha: str  # the file's SHA-256 (hex)
    pins: int = 0  # requests reading the file right now; a pinned upload is never evicted


class UploadCache:
    """At most `max_items` uploads and `max_bytes` (each upload's file + `feature_bytes(sha)`) in `root`.

    `forget(sha)` is called for each evicted upload, to drop its extracted features. The upload just
    added and uploads in use (`pin`) are never evicted, so the cache may briefly hold more.
    """

    def __init__(
        self,
        root: Path,
        max_items: int,
        max_bytes: int,
        feature_bytes: Callable[[str], int] = lambda sha: 0,
        forget: Callable[[str], None] = lambda sha: None,
    ):
        self.root = root
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.feature_bytes = feature_bytes
        self.forget = forget
        self._items: OrderedDict[str, Upload] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """The kept uploads, least recently used first."""
        with self._lock:
            return list(self._items)

    def _bytes(self, name: str, upload: Upload) -> int:
        path = self.root / name
        size = path.stat().st_size if path.is_file() else 0
        return size + self.feature_bytes(upload.sha)

    def total_bytes(self) -> int:
        with self._lock:
            items = list(self._items.items())
        return sum(self._bytes(name, upload) for name, upload in items)

    def add(self, name: str, sha: str) -> list[str]:
        """Keep the upload `name` (a file already in `root`) as the most recent; returns the evicted names."""
        with self._lock:
            upload = self._items.pop(name, None) or Upload(sha)
            self._items[name] = upload
        return self.enforce(keep=name)

    def touch(self, name: str) -> bool:
        """Mark `name` as just used; False when it is not (or no longer) kept."""
        with self._lock:
            if name not in self._items:
                return False
            self._items.move_to_end(name)
            return True

    def kept(self, name: object) -> str:
        """`name` if it is a kept upload (and mark it as just used), else Refused(404) saying why."""
        check_name(name, "upload")
        if not self.touch(name):
            raise Refused(
                404,
                f"upload {name!r} is not kept on this server: it keeps the {self.max_items} most "
                f"recently used uploads (at most {self.max_bytes / 2**20:g} MiB with their "
                "features) and deletes them when it stops; upload the file again",
            )
        return name

    def path_of(self, name: object) -> Path:
        """The file of the kept upload `name` (marked as just used), else Refused (4xx) saying why."""
        return resolve_inside(self.root, self.kept(name), "upload")

    def pin(self, name: str) -> None:
        with self._lock:
            if name in self._items:
                self._items[name].pins += 1

    def unpin(self, name: str) -> None:
        with self._lock:
            if name in self._items:
                self._items[name].pins = max(0, self._items[name].pins - 1)

    def enforce(self, keep: str | None = None) -> list[str]:
        """Evict least recently used uploads (not `keep`, not pinned) until within both caps."""
        evicted = []
        with self._lock:
            sizes = {name: self._bytes(name, upload) for name, upload in self._items.items()}
            total = sum(sizes.values())
            for name in list(self._items):
                if len(self._items) <= self.max_items and total <= self.max_bytes:
                    break
                upload = self._items[name]
                if name == keep or upload.pins:
                    continue
                del self._items[name]
                total -= sizes[name]
                evicted.append((name, upload.sha))
        for name, sha in evicted:
            (self.root / name).unlink(missing_ok=True)
            self.forget(sha)
        return [name for name, _ in evicted]

    def clear(self) -> int:
        """Delete every file in `root` (kept uploads, partial uploads) and their features; returns the
        number of files deleted. The folder itself belongs to the `UploadSession`."""
        with self._lock:
            self._items.clear()
        return delete_uploads(self.root, self.forget)


async def store_upload(
    chunks: AsyncIterable[bytes], root: Path, filename: str, max_bytes: int
) -> tuple[str, str, int]:
    """Write the body `chunks` into `root`, complete or not at all, named by its SHA-256 (32 hex digits)
    and the suffix of `filename`; returns (name, SHA-256 hex, bytes). Refused: 413 past `max_bytes`, 400
    when empty or badly named."""
    suffix = Path(check_name(filename, "upload")).suffix.lower()
    part = root / f".part-{uuid.uuid4().hex}"
    digest, size = hashlib.sha256(), 0
    try:
        with part.open("wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise Refused(413, body_too_large(max_bytes))
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if size == 0:
            raise Refused(400, "the upload is empty; send the video file as the request body")
        sha = digest.hexdigest()
        name = f"{sha[:32]}{suffix}"
        os.replace(part, root / name)
    finally:
        part.unlink(missing_ok=True)
    return name, sha, size


def delete_uploads(root: Path, forget: Callable[[str], None]) -> int:
    """Delete the files directly in `root`, calling `forget(hash)` for each upload; returns how many."""
    count = 0
    if root.is_dir():
        for path in root.iterdir():
            if path.is_file() or path.is_symlink():
                delete_upload(path, forget)
                count += 1
    return count


def delete_upload(path: Path, forget: Callable[[str], None]) -> None:
    """Delete one file; an upload (named by its content hash) also has its features dropped."""
    stem = path.name.split(".", 1)[0]
    if _HASH_NAME.fullmatch(stem):
        forget(stem)
    path.unlink(missing_ok=True)


class UploadSession:
    """This server's uploads folder, `parent/<pid>-<random>`, with an OS file lock on
    `parent/<pid>-<random>.lock` held from `open()` to `close()`.

    `open()` also deletes what servers that stopped without cleaning up left behind: folders whose lock
    is free (the OS releases it when a process dies), and loose files of older versions; folders of
    running servers are left alone. `forget(folder, hash)` drops an upload's features.
    """

    def __init__(self, parent: Path, forget: Callable[[Path, str], None] = lambda folder, sha: None):
        self.parent = parent
        self.root = parent / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.forget = forget
        self._lock_file = None

    @property
    def is_open(self) -> bool:
        return self._lock_file is not None

    def open(self) -> int:
        """Lock and create this server's folder; returns the number of leftover files deleted."""
        self.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = lock_file(self.root.with_name(self.root.name + ".lock"))
        self.root.mkdir(exist_ok=True)
        removed = 0
        for entry in self.parent.iterdir():
            if entry == self.root or entry.name.endswith(".lock"):
                continue
            if not entry.is_dir():  # a loose file: the layout of older versions, or a stray
                delete_upload(entry, lambda sha: self.forget(self.parent, sha))
                removed += 1
                continue
            lock = entry.with_name(entry.name + ".lock")
            handle = lock_file(lock, wait=False)
            if handle is None:
                continue  # a running server's folder
            with handle:
                removed += delete_uploads(entry, lambda sha, e=entry: self.forget(e, sha))
                shutil.rmtree(entry, ignore_errors=True)
                lock.unlink(missing_ok=True)
        return removed

    def close(self) -> None:
        """Delete this server's folder and lock, and `uploads/` itself when no other server uses it."""
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lock_file is not None:
            Path(self._lock_file.name).unlink(missing_ok=True)
            self._lock_file.close()
            self._lock_file = None
        with contextlib.suppress(OSError):  # not empty: another server's uploads
            self.parent.rmdir()
