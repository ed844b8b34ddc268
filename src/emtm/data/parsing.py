"""Checked reading of data files: UTF-8 text and its lines, JSON and JSON lines (duplicate keys refused),
and checks of the values in them (numbers, [start, end] pairs). Every problem is a `DataError` naming
the file and line; `short_repr` keeps a huge value out of the message."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emtm.errors import DataError


def require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} does not exist", path)
    if not path.is_file():
        raise DataError(f"{what} is not a regular file", path)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte offset {exc.start})", path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path) from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line ending), skipping blank lines."""
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield lineno, line


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) per non-blank line of a JSON-lines file. Text that is not UTF-8,
    a line that is not valid JSON, repeats a key or is not an object is a DataError naming the line."""
    for lineno, line in text_lines(path):
        try:
            record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKeyError as exc:
            raise DataError(f"duplicate key {exc.key!r} in the JSON object", path, lineno) from None
        except (ValueError, RecursionError) as exc:  # syntax, a huge integer, or deep nesting
            raise DataError(f"invalid JSON ({json_problem(exc)})", path, lineno) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object per line, got {kind_of(record)}", path, lineno)
        yield lineno, record


class _DuplicateKeyError(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def load_json(path: Path, expected: str) -> Any:
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKeyError as exc:
        raise DataError(f"duplicate key {exc.key!r} in a JSON object", path) from None
    except (ValueError, RecursionError) as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        raise DataError(f"invalid JSON ({json_problem(exc)}); expected {expected}", path, line) from None


def json_problem(exc: ValueError | RecursionError) -> str:
    """What `json.loads` rejected, for a message: syntax (with column), a too-long integer or deep nesting."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg}, column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "arrays/objects nested too deeply"
    return str(exc).split(":")[0]  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"


def short_repr(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters, so a huge field does not flood an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__} too long to print>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def number_pair(value: Any, what: str, path: Path, line: int | None = None) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and all(is_number(x) for x in value)):
        raise DataError(f"{what} must be [start, end] (two numbers), got {short_repr(value)}", path, line)
    return float(value[0]), float(value[1])


def positive_number(value: Any, what: str, path: object, line: int | None = None) -> float:
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise DataError(f"{what} must be a positive finite number, got {short_repr(value)}", path, line)
    return float(value)


def is_number(value: Any) -> bool:
    """An int or float (not bool) that converts to a float: JSON allows integers past float range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def kind_of(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
