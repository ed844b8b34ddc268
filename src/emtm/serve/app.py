"""The FastAPI app of `emtm serve`: a JSON API (`POST /ground`, `POST /upload`, `GET /videos`, and for a
distilled run `GET /examples`), one page."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from emtm import __version__
from emtm.errors import EmtmError
from emtm.serve.limits import Limits, Refused, check_name, list_videos, resolve_inside
from emtm.serve.service import GroundingService
from emtm.serve.teachers import MAX_LISTED, TeacherExamples, TeacherOptions
from emtm.serve.uploads import UploadCache, UploadSession

STATIC = Path(__file__).parent / "static"
UPLOADS = "uploads"


class BodyTooLarge(HTTPException):
    """Raised while a body is read past its limit (an HTTPException, so FastAPI passes it through)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: refuse a body over the limit (413), by its Content-Length or while it streams."""

    def __init__(self, app: Any, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.max_upload_bytes if scope["path"] == "/upload" else self.limits.max_body_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            what = "upload" if scope["path"] == "/upload" else "request body"
            message = f"{what} of {length.decode(errors='replace')} bytes is over the limit of {limit} bytes"
            response = JSONResponse({"detail": message}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return await self.app(scope, limited, send)


def without_paths(obj: Any) -> Any:
    """`obj` with every absolute path (a string, or a key) cut to its last part: what a client may see."""
    if isinstance(obj, dict):
        return {without_paths(k): without_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [without_paths(v) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj):
        return Path(obj).name
    return obj


class GroundRequest(BaseModel):
    """One query in one video: give exactly one of `video`, `upload` and `features`."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "3" or true is not a top_k
    query: str = Field(description="the sentence to ground")
    video: str | None = Field(None, description="a file name from GET /videos")
    upload: str | None = Field(None, description="the `upload` id returned by POST /upload")
    features: list[list[float]] | None = Field(None, description="precomputed (T, D) clip features")
    duration: float | None = Field(None, description="seconds; needed with `features` unless the model knows")
    top_k: int | None = Field(None, description="how many moments, best first, after NMS (default 5)")

    @field_validator("query", "video", "upload")
    @classmethod
    def _utf8(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    "holds a lone UTF-16 surrogate, which is no text; send valid UTF-8"
                ) from None
        return value


class MomentOut(BaseModel):
    start: float
    end: float
    score: float


class CurvesOut(BaseModel):
    times: list[float] = Field(description="clip centres, seconds")
    start: list[float] = Field(description="P(the moment starts in this clip)")
    end: list[float] = Field(description="P(the moment ends in this clip)")


class GroundResponse(BaseModel):
    query: str
    source: str
    video: str | None
    media_url: str | None
    duration: float
    n_clips: int
    moments: list[MomentOut]
    curves: CurvesOut | None
    cached: bool
    seconds: dict[str, float]


class UploadResponse(BaseModel):
    upload: str
    bytes: int
    url: str
    evicted: list[str] = Field(description="older uploads deleted to stay within the upload cache's caps")


class Span(BaseModel):
    start: float
    end: float


class ExampleSummary(BaseModel):
    index: int
    sample_id: str
    video_id: str
    query: str
    duration: float
    ground_truth: Span


class ExamplesResponse(BaseModel):
    split: str
    teachers: list[str]
    total: int
    offset: int
    examples: list[ExampleSummary]


class TeacherOut(BaseModel):
    name: str
    kau_weights: dict[str, float] = Field(description="the KAU's weight of this teacher for start and end")
    start: list[float] = Field(description="the teacher's unified start distribution over the clips")
    end: list[float]


class Distributions(BaseModel):
    start: list[float]
    end: list[float]


class StudentOut(Distributions):
    moment: Span = Field(description="the student's top-1 moment, seconds")


class ExampleResponse(BaseModel):
    index: int
    split: str
    sample_id: str
    video_id: str
    query: str
    duration: float
    ground_truth: Span
    n_clips: int
    times: list[float] = Field(description="clip centres, seconds")
    teachers: list[TeacherOut]
    ensemble: Distributions = Field(description="the KAU-weighted mixture of the teachers")
    student: StudentOut


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
    limits = limits or Limits()
    videos_root = Path(videos_dir).resolve() if videos_dir is not None else None
    if videos_root is not None and not videos_root.is_dir():
        raise EmtmError(f"--videos {videos_dir}: not a folder (expected a folder of video files)")
    cache = (
        Path(cache_dir) if cache_dir is not None else Path(model_dir).resolve().parent / ".emtm-serve-cache"
    )
    service = GroundingService(model_dir, cache, device=device)
    session = UploadSession((cache / UPLOADS).resolve(), lambda folder, sha: service.forget(sha, folder))
    uploads_root = session.root
    session.open()  # locks this server's folder; deletes what servers that did not stop cleanly left
    uploads = UploadCache(
        uploads_root,
        limits.max_upload_cache,
        limits.max_upload_cache_bytes,
        feature_bytes=service.feature_bytes,
        forget=lambda sha: service.forget(sha, uploads_root),
    )
    examples, no_examples = TeacherExamples.open(model_dir, teachers)
    slots = asyncio.Semaphore(limits.max_extract_jobs) if limits.max_extract_jobs > 0 else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not session.is_open:  # an app served again after a shutdown
            session.open()
        try:
            yield
        finally:
            uploads.clear()  # with their features; the folder goes with the session
            session.close()

    app = FastAPI(
        title="emtm serve",
        version=__version__,
        description="Temporal sentence grounding: where in a video does a sentence happen?",
        docs_url=None,  # the Swagger / ReDoc pages load scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.limits = limits
    app.state.uploads = uploads
    app.state.teachers = examples
    app.state.teachers_off = no_examples
    app.add_middleware(BodyLimit, limits=limits)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Messages name the model, videos and cache by their folder's name, never by an absolute path.
    private = sorted(
        {str(p) for p in (Path(model_dir).resolve(), Path(model_dir), videos_root, service.cache_dir,
                          Path(service.cache_dir).resolve()) if p is not None and str(p) not in ("", ".")},
        key=len, reverse=True,
    )  # fmt: skip

    def scrub(message: str) -> str:
        for path in private:
            message = message.replace(path, Path(path).name)
        return message

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

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The model, what raw video extraction it allows, and the server's limits."""
        teachers = {"available": examples is not None, "reason": scrub(no_examples) if no_examples else None}
        if examples is not None:
            teachers.update(split=examples.view.split, names=examples.teachers, total=len(examples.view))
        return {
            **without_paths(service.info()),
            "limits": limits.as_dict(),
            "videos_dir": videos_root.name if videos_root else "",  # a name, not a server path
            "teachers": teachers,
        }

    @app.get("/videos")
    async def videos() -> dict[str, Any]:
        """The video files directly in the served folder (links leading outside it are left out)."""
        found = []
        for name, path in list_videos(videos_root):
            found.append({"name": name, "bytes": path.stat().st_size, "url": f"/media/{name}"})
        return {"videos": found, "extraction": service.info()["extraction"]}

    @app.get("/media/{name}", include_in_schema=False)
    async def media(name: str) -> FileResponse:
        if videos_root is None:
            raise Refused(404, "this server has no videos folder (start it with --videos DIR)")
        return FileResponse(resolve_inside(videos_root, name))

    @app.get("/uploads/{name}", include_in_schema=False)
    async def uploaded(name: str) -> FileResponse:
        kept(name)
        return FileResponse(resolve_inside(uploads_root, name, "upload"))

    def kept(name: str) -> str:
        """`name` if it is a kept upload (and mark it as just used), else 404 saying why."""
        check_name(name, "upload")
        if not uploads.touch(name):
            raise Refused(
                404,
                f"upload {name!r} is not kept on this server: it keeps the {limits.max_upload_cache} most "
                f"recently used uploads (at most {limits.max_upload_cache_bytes / 2**20:g} MiB with their "
                "features) and deletes them when it stops; upload the file again",
            )
        return name

    @app.post(
        "/upload",
        response_model=UploadResponse,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {}}}}
        },
    )
    async def upload(request: Request, filename: str = Query(description="the file's name (for its suffix)")):
        """Upload a video file as the raw request body; ground in it with `{"upload": id}`."""
        if service.spec is None:
            raise Refused(422, service.extract_refusal or "this model cannot ground raw video files")
        suffix = Path(check_name(filename, "upload")).suffix.lower()
        part = uploads_root / f".part-{uuid.uuid4().hex}"
        digest, size = hashlib.sha256(), 0
        try:
            with part.open("wb") as handle:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limits.max_upload_bytes:
                        raise BodyTooLarge(limits.max_upload_bytes)
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if size == 0:
                raise Refused(400, "the upload is empty; send the video file as the request body")
            sha = digest.hexdigest()
            name = f"{sha[:32]}{suffix}"
            os.replace(part, uploads_root / name)
        finally:
            part.unlink(missing_ok=True)
        service.remember_hash(uploads_root / name, sha)
        evicted = uploads.add(name, sha)
        return UploadResponse(upload=name, bytes=size, url=f"/uploads/{name}", evicted=evicted)

    async def timed(call: Any, *args: Any, slot: bool = False, done: Callable[[], None] | None = None) -> Any:
        """Run `call(*args)` in a worker thread within the request timeout; with `slot`, as one of the
        limited extraction jobs (429 when all are busy; the slot is held until the thread ends).
        `done()` is called once the thread has ended, or at once when the call is refused."""
        try:
            if slot and slots is not None:
                if slots.locked():
                    raise HTTPException(
                        429,
                        f"{limits.max_extract_jobs} video extraction job(s) are already running (the limit); "
                        "try again shortly",
                        headers={"Retry-After": "5"},
                    )
                await slots.acquire()
            elif slot:
                raise Refused(503, "video extraction is switched off on this server (--max-extract-jobs 0)")
        except BaseException:
            if done is not None:
                done()
            raise
        task = asyncio.ensure_future(run_in_threadpool(call, *args))
        if slot:
            task.add_done_callback(lambda _: slots.release())
        if done is not None:
            task.add_done_callback(lambda _: done())
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=limits.timeout_s)
        except TimeoutError:
            raise HTTPException(
                504,
                f"the request took longer than the {limits.timeout_s:g} s limit; a video's features "
                "stay cached once extracted, so trying again may be faster",
            ) from None

    @app.post("/ground", response_model=GroundResponse)
    async def ground(req: GroundRequest) -> GroundResponse:
        """Ground `query` in a served video, an uploaded one or precomputed features: the top-k moments
        (seconds, best first) and the model's start/end probability per clip."""
        query = req.query.strip()
        if not query:
            raise Refused(422, "query is empty; type a sentence describing a moment")
        if len(req.query) > limits.max_query_chars:
            raise Refused(413, f"query is {len(req.query)} characters; the limit is {limits.max_query_chars}")
        top_k = min(5, limits.max_top_k) if req.top_k is None else req.top_k
        if not 1 <= top_k <= limits.max_top_k:
            raise Refused(422, f"top_k {top_k}: must be between 1 and {limits.max_top_k}")
        given = [k for k in ("video", "upload", "features") if getattr(req, k) is not None]
        if len(given) != 1:
            raise Refused(422, f"give exactly one of video, upload and features (got {given or 'none'})")
        timings: dict[str, float] = {}
        cached, name, url = False, None, None
        if req.features is not None:
            if len(req.features) > limits.max_clips:
                raise Refused(413, f"features have {len(req.features)} rows; the limit is {limits.max_clips}")
            try:
                features = np.asarray(req.features, dtype=np.float32)
            except ValueError:
                raise Refused(422, "features must be a (T, D) list of equal-length rows of numbers") from None
            duration, source = req.duration, "features"
        else:
            if service.spec is None:
                raise Refused(422, service.extract_refusal or "this model cannot ground raw video files")
            if req.video is not None:
                if videos_root is None:
                    raise Refused(404, "this server has no videos folder (start it with --videos DIR)")
                path, source, name, url = resolve_inside(videos_root, req.video), "video", req.video, None
                url = f"/media/{req.video}"
            else:
                path = resolve_inside(uploads_root, kept(req.upload), "upload")
                source, name, url = "upload", req.upload, f"/uploads/{req.upload}"
            key = service.cache_key(path)
            hit = service.cached(key) if key else None
            if hit is not None:
                (features, duration), cached = hit, True
            else:
                loop = asyncio.get_running_loop()
                started = loop.time()
                pinned = name if source == "upload" else None  # not evicted while it is extracted
                if pinned:
                    uploads.pin(pinned)
                done = (lambda: uploads.unpin(pinned)) if pinned else None
                features, duration, cached = await timed(service.features_of, path, slot=True, done=done)
                timings["extract"] = round(loop.time() - started, 4)
                if pinned:
                    uploads.enforce(keep=pinned)  # its features now count towards the caps
        result = await timed(service.ground, features, duration, query, top_k)
        timings["ground"] = result.pop("ground_seconds")
        return GroundResponse(
            query=query, source=source, video=name, media_url=url, cached=cached, seconds=timings, **result
        )

    def teacher_view() -> TeacherExamples:
        if examples is None:
            raise Refused(
                404,
                f"no teachers and KAU view on this server: {no_examples}. It needs `emtm serve --model RUN` "
                "with RUN written by `emtm distill` (its teacher caches and data.yaml readable)",
            )
        return examples

    @app.get("/examples", response_model=ExamplesResponse)
    async def list_examples(
        offset: int = Query(0, ge=0, description="the first example's index"),
        limit: int = Query(100, ge=1, le=MAX_LISTED, description=f"how many (at most {MAX_LISTED})"),
    ) -> dict[str, Any]:
        """A distilled run's training examples (another split with `emtm serve --split`): index, query,
        ground truth. 404 when the server has no teachers and KAU view."""
        return teacher_view().listing(offset, limit)

    @app.get("/examples/{index}", response_model=ExampleResponse)
    async def get_example(index: int) -> dict[str, Any]:
        """Example `index`: each teacher's unified start/end distributions with its KAU weights, the
        KAU-weighted ensemble, and the student's distributions and top-1 moment (as `emtm show` draws)."""
        view = teacher_view()
        if not 0 <= index < len(view.view):
            raise Refused(
                404,
                f"example {index} does not exist: the {view.view.split} split has {len(view.view)} "
                f"queries (0-{len(view.view) - 1}); GET /examples lists them",
            )
        return await timed(view.example, index)

    return app
