"""The FastAPI app of `emtm serve`: a JSON API (`POST /ground`, `POST /upload`, `GET /videos`, and for a
distilled run `GET /examples`), one page. `create_app` puts together the parts: the server's state
(`state.py`), the body-size limit (`guards.py`), the error handlers, the page (`page.py`) and the API's
routes (`routes.py`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from emtm.errors import EmtmError
from emtm.serve.guards import BodyLimit
from emtm.serve.limits import Limits, Refused
from emtm.serve.page import add_page
from emtm.serve.routes import add_routes
from emtm.serve.state import ServeState
from emtm.serve.teachers import TeacherOptions
from emtm.version import __version__


def create_app(
    model_dir: str | Path,
    videos_dir: str | Path | None = None,
    limits: Limits | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    teachers: TeacherOptions | None = None,
) -> FastAPI:
    """The demo app over the model `model_dir` and the videos directly in `videos_dir` (may be None).

    Features extracted from videos are cached by content hash under `cache_dir` (default: a
    `.emtm-serve-cache` folder beside the model); uploads are kept in a folder of this server's own
    under its `uploads/` (servers may share a cache), capped by
    `limits` (least recently used evicted first) and deleted when the server stops. When `model_dir` is
    a distilled run, `GET /examples` shows its teachers and KAU weights (`teachers` says where from).
    """
    state = ServeState.open(model_dir, videos_dir, limits or Limits(), cache_dir, device, teachers)
    app = FastAPI(
        title="emtm serve",
        version=__version__,
        description="Temporal sentence grounding: where in a video does a sentence happen?",
        docs_url=None,  # the Swagger / ReDoc pages load scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
        lifespan=state.lifespan,
    )
    app.state.service = state.service
    app.state.limits = state.limits
    app.state.uploads = state.uploads
    app.state.teachers = state.examples
    app.state.teachers_off = state.no_examples
    app.add_middleware(BodyLimit, limits=state.limits)
    add_error_handlers(app, state.scrub)
    add_page(app)
    add_routes(app, state)
    return app


def add_error_handlers(app: FastAPI, scrub: Callable[[str], str]) -> None:
    """Refusals, emtm's errors and invalid requests as `{"detail": message}`, with the server's paths in
    the message cut to their folder's name by `scrub`."""

    @app.exception_handler(Refused)
    async def refused(_: Request, err: Refused) -> JSONResponse:
        return JSONResponse({"detail": scrub(err.message)}, status_code=err.status)

    @app.exception_handler(EmtmError)
    async def emtm_error(_: Request, err: EmtmError) -> JSONResponse:
        return JSONResponse({"detail": scrub(str(err))}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors()]
        return JSONResponse({"detail": scrub("invalid request: " + "; ".join(parts))}, status_code=422)
