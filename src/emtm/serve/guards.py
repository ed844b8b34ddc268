"""The request limits of `emtm serve` as the app enforces them over HTTP: the body-size middleware (413),
and `Jobs`, which runs the work of a request in a thread within the request timeout (504), with video
extractions limited to `--max-extract-jobs` at once (429). The limits themselves are in `limits.py`,
which needs no FastAPI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from emtm.serve.limits import Limits, Refused, body_too_large


class BodyTooLarge(HTTPException):
    """Raised while a body is read past its limit (an HTTPException, so FastAPI passes it through)."""

    def __init__(self, limit: int):
        super().__init__(413, body_too_large(limit))


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


class Jobs:
    """The work of requests, each in a worker thread within `limits.timeout_s`; video extractions hold
    one of `limits.max_extract_jobs` slots (none: extraction is switched off)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.slots = asyncio.Semaphore(limits.max_extract_jobs) if limits.max_extract_jobs > 0 else None

    async def run(
        self, call: Any, *args: Any, slot: bool = False, done: Callable[[], None] | None = None
    ) -> Any:
        """Run `call(*args)` in a worker thread within the request timeout; with `slot`, as one of the
        limited extraction jobs (429 when all are busy; the slot is held until the thread ends).
        `done()` is called once the thread has ended, or at once when the call is refused."""
        limits, slots = self.limits, self.slots
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
