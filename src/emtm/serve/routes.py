"""The JSON API of `emtm serve` and the files it serves: `GET /info`, `GET /videos`, `POST /upload`,
`POST /ground`, `GET /examples` and `GET /examples/{index}`, and the videos and uploads themselves
(`/media/{name}`, `/uploads/{name}`), over a `ServeState`."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse

from emtm.serve.limits import Refused, list_videos
from emtm.serve.schemas import (
    ExampleResponse,
    ExamplesResponse,
    GroundRequest,
    GroundResponse,
    UploadResponse,
)
from emtm.serve.state import ServeState, without_paths
from emtm.serve.teachers import MAX_LISTED
from emtm.serve.uploads import store_upload


def add_routes(app: FastAPI, state: ServeState) -> None:
    """Add the routes of the API over `state` to `app`, in the order the OpenAPI schema lists them."""
    service, limits, uploads, jobs = state.service, state.limits, state.uploads, state.jobs

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The model, what raw video extraction it allows, and the server's limits."""
        examples, no_examples = state.examples, state.no_examples
        teachers = {
            "available": examples is not None,
            "reason": state.scrub(no_examples) if no_examples else None,
        }
        if examples is not None:
            teachers.update(split=examples.view.split, names=examples.teachers, total=len(examples.view))
        return {
            **without_paths(service.info()),
            "limits": limits.as_dict(),
            "videos_dir": state.videos_root.name if state.videos_root else "",  # a name, not a server path
            "teachers": teachers,
        }

    @app.get("/videos")
    async def videos() -> dict[str, Any]:
        """The video files directly in the served folder (links leading outside it are left out)."""
        found = []
        for name, path in list_videos(state.videos_root):
            found.append({"name": name, "bytes": path.stat().st_size, "url": f"/media/{name}"})
        return {"videos": found, "extraction": service.info()["extraction"]}

    @app.get("/media/{name}", include_in_schema=False)
    async def media(name: str) -> FileResponse:
        return FileResponse(state.video(name))

    @app.get("/uploads/{name}", include_in_schema=False)
    async def uploaded(name: str) -> FileResponse:
        return FileResponse(uploads.path_of(name))

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
        name, sha, size = await store_upload(
            request.stream(), uploads.root, filename, limits.max_upload_bytes
        )
        service.remember_hash(uploads.root / name, sha)
        evicted = uploads.add(name, sha)
        return UploadResponse(upload=name, bytes=size, url=f"/uploads/{name}", evicted=evicted)

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
                path, source, name, url = state.video(req.video), "video", req.video, f"/media/{req.video}"
            else:
                path = uploads.path_of(req.upload)
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
                features, duration, cached = await jobs.run(service.features_of, path, slot=True, done=done)
                timings["extract"] = round(loop.time() - started, 4)
                if pinned:
                    uploads.enforce(keep=pinned)  # its features now count towards the caps
        result = await jobs.run(service.ground, features, duration, query, top_k)
        timings["ground"] = result.pop("ground_seconds")
        return GroundResponse(
            query=query, source=source, video=name, media_url=url, cached=cached, seconds=timings, **result
        )

    @app.get("/examples", response_model=ExamplesResponse)
    async def list_examples(
        offset: int = Query(0, ge=0, description="the first example's index"),
        limit: int = Query(100, ge=1, le=MAX_LISTED, description=f"how many (at most {MAX_LISTED})"),
    ) -> dict[str, Any]:
        """A distilled run's training examples (another split with `emtm serve --split`): index, query,
        ground truth. 404 when the server has no teachers and KAU view."""
        return state.teacher_view().listing(offset, limit)

    @app.get("/examples/{index}", response_model=ExampleResponse)
    async def get_example(index: int) -> dict[str, Any]:
        """Example `index`: each teacher's unified start/end distributions with its KAU weights, the
        KAU-weighted ensemble, and the student's distributions and top-1 moment (as `emtm show` draws)."""
        view = state.teacher_view()
        if not 0 <= index < len(view.view):
            raise Refused(
                404,
                f"example {index} does not exist: the {view.view.split} split has {len(view.view)} "
                f"queries (0-{len(view.view) - 1}); GET /examples lists them",
            )
        return await jobs.run(view.example, index)
