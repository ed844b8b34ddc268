"""What one `emtm serve` app holds besides its routes (`ServeState`): the grounding service, this server's
uploads, the teachers and KAU view of a distilled run, the extraction jobs, and what a client may see of
the server's paths."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emtm.errors import EmtmError
from emtm.serve.guards import Jobs
from emtm.serve.limits import Limits, Refused, resolve_inside
from emtm.serve.service import GroundingService
from emtm.serve.teachers import TeacherExamples, TeacherOptions
from emtm.serve.uploads import UploadCache, UploadSession

UPLOADS = "uploads"


def without_paths(obj: Any) -> Any:
    """`obj` with every absolute path (a string, or a key) cut to its last part: what a client may see."""
    if isinstance(obj, dict):
        return {without_paths(k): without_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [without_paths(v) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj):
        return Path(obj).name
    return obj


@dataclass
class ServeState:
    """The parts of one app that its routes share; `ServeState.open` builds them."""

    service: GroundingService
    limits: Limits
    videos_root: Path | None  # the served folder, resolved; None: no --videos
    session: UploadSession
    uploads: UploadCache  # in session.root
    examples: TeacherExamples | None
    no_examples: str | None  # why there is no teachers and KAU view
    jobs: Jobs
    private: list[str]  # the server's paths that messages name by their last part, longest first

    @classmethod
    def open(
        cls,
        model_dir: str | Path,
        videos_dir: str | Path | None,
        limits: Limits,
        cache_dir: str | Path | None,
        device: str,
        teachers: TeacherOptions | None,
    ) -> ServeState:
        """Load the model, lock this server's uploads folder (deleting what servers that did not stop
        cleanly left) and open the teachers view; see `emtm.serve.app.create_app`."""
        videos_root = Path(videos_dir).resolve() if videos_dir is not None else None
        if videos_root is not None and not videos_root.is_dir():
            raise EmtmError(f"--videos {videos_dir}: not a folder (expected a folder of video files)")
        cache = (
            Path(cache_dir)
            if cache_dir is not None
            else Path(model_dir).resolve().parent / ".emtm-serve-cache"
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
        # Messages name the model, videos and cache by their folder's name, never by an absolute path.
        model, cache_root = Path(model_dir), Path(service.cache_dir)
        paths = (model.resolve(), model, videos_root, cache_root, cache_root.resolve())
        private = sorted(
            {str(p) for p in paths if p is not None and str(p) not in ("", ".")}, key=len, reverse=True
        )
        return cls(
            service, limits, videos_root, session, uploads, examples, no_examples, Jobs(limits), private
        )

    def scrub(self, message: str) -> str:
        """`message` with the server's paths cut to their folder's name."""
        for path in self.private:
            message = message.replace(path, Path(path).name)
        return message

    @asynccontextmanager
    async def lifespan(self, _: Any) -> AsyncIterator[None]:
        """The app's life: its uploads, with their features, and their folder are deleted when it stops."""
        if not self.session.is_open:  # an app served again after a shutdown
            self.session.open()
        try:
            yield
        finally:
            self.uploads.clear()  # with their features; the folder goes with the session
            self.session.close()

    def video(self, name: object) -> Path:
        """The served video file `name`, else Refused (4xx) saying why."""
        if self.videos_root is None:
            raise Refused(404, "this server has no videos folder (start it with --videos DIR)")
        return resolve_inside(self.videos_root, name)

    def teacher_view(self) -> TeacherExamples:
        """The teachers and KAU view, else Refused(404) saying why there is none."""
        if self.examples is None:
            raise Refused(
                404,
                f"no teachers and KAU view on this server: {self.no_examples}. It needs `emtm serve --model "
                "RUN` with RUN written by `emtm distill` (its teacher caches and data.yaml readable)",
            )
        return self.examples
