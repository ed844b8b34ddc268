"""`emtm serve`: a small web demo and JSON API over one model (FastAPI, optional extra `emtm[serve]`).

`create_app(model_dir, videos_dir, limits)` builds the app; `emtm serve --model M --videos DIR` runs it on
127.0.0.1. Nothing here is imported by the rest of emtm, so a CLI-only install never needs FastAPI.
See docs/SERVE.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emtm.serve.limits import Limits

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["Limits", "create_app"]


def create_app(*args, **kwargs) -> FastAPI:  # noqa: ANN002, ANN003 - the real signature is emtm.serve.app.create_app
    """Build the FastAPI app (imports FastAPI lazily); see `emtm.serve.app.create_app`."""
    from emtm.serve.app import create_app as build

    return build(*args, **kwargs)
