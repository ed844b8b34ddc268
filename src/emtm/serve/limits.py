"""The server's limits, and the checks that keep every file it reads inside the served folder."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emtm.extract.video import VIDEO_SUFFIXES

MAX_NAME_CHARS = 255
_ENCODED = re.compile(r"%[0-9a-fA-F]{2}")


@dataclass(frozen=True)
class Limits:
    """Request limits of `emtm serve` (each a CLI flag); the defaults suit a demo on one machine."""

    max_upload_bytes: int = 200 * 1024 * 1024  # one uploaded video file
    max_body_bytes: int = 8 * 1024 * 1024  # any other request body (JSON; precomputed features)
    max_query_chars: int = 300
    max_top_k: int = 20
    max_extract_jobs: int = 2  # concurrent feature extractions; more get 429
    timeout_s: float = 120.0  # per request (extraction + grounding); 504 past it
    max_clips: int = 4096  # rows of precomputed features in a request
    max_upload_cache: int = 20  # uploads kept; the least recently used is deleted first
    max_upload_cache_bytes: int = 2 * 1024**3  # kept uploads' files plus their extracted features

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def body_too_large(limit: int) -> str:
    """The message of a request body that is read past its limit of `limit` bytes (413)."""
    return f"request body is larger than the limit of {limit} bytes"


class Refused(Exception):
    """A request the server refuses: an HTTP status and a message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def check_name(name: object, what: str = "video") -> str:
    """A plain video file name, else Refused(400): no folders, no "..", no encoding, no odd characters."""
    if not isinstance(name, str) or not name:
        raise Refused(400, f"{what} name must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise Refused(400, f"{what} name is {len(name)} characters long; the limit is {MAX_NAME_CHARS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise Refused(400, f"{what} name {name!r} contains a control character (NUL, newline, ...)")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise Refused(400, f"{what} name {name!r} is a path; give a file name from GET /videos, no folders")
    if _ENCODED.search(name):
        raise Refused(400, f"{what} name {name!r} contains percent-encoding; give the plain file name")
    if name.startswith("."):
        raise Refused(400, f"{what} name {name!r} is a hidden file; only listed videos can be read")
    if Path(name).suffix.lower() not in VIDEO_SUFFIXES:
        raise Refused(
            400, f"{what} name {name!r}: not a video file (expected one of {', '.join(VIDEO_SUFFIXES)})"
        )
    return name


def resolve_inside(root: Path, name: object, what: str = "video") -> Path:
    """The regular file `name` directly in `root`, refused (4xx) when it escapes `root` or is missing."""
    name = check_name(name, what)
    root = root.resolve()
    path = root / name
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise Refused(
            404, f"{what} {name!r} not found in the served folder; GET /videos lists them"
        ) from None
    if real.parent != root:
        raise Refused(403, f"{what} {name!r} is a link that leads outside the served folder; refused")
    if not real.is_file():
        raise Refused(404, f"{what} {name!r} is not a regular file")
    return real


def list_videos(root: Path | None) -> list[tuple[str, Path]]:
    """(name, real path) of the video files directly in `root` that `resolve_inside` accepts, by name."""
    if root is None or not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        try:
            out.append((path.name, resolve_inside(root, path.name)))
        except Refused:
            continue
    return out
