"""The "Teachers and KAU" view of `emtm serve`: for a distilled run, each training example's teachers'
unified start/end distributions, the KAU weights, the ensemble and the student, as JSON.

The numbers come from `emtm.experiments.show.TeacherView`, the code path that `emtm show` draws.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emtm.errors import EmtmError

MAX_LISTED = 500  # examples per GET /examples page


@dataclass(frozen=True)
class TeacherOptions:
    """Where the view's data comes from, as for `emtm show`: the run's own teacher caches and data.yaml
    unless given. `enabled=False` switches the view off."""

    enabled: bool = True
    caches: tuple[str, ...] | None = None
    data: str | None = None
    split: str = "train"

    @property
    def explicit(self) -> bool:
        """Asked for on the command line (then a failure stops the server instead of hiding the view)."""
        return bool(self.caches) or self.data is not None or self.split != "train"


def is_distilled_run(model_dir: Path) -> bool:
    """True when `model_dir` is a run directory written by `emtm distill` (not an exported model)."""
    try:
        raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    train = raw.get("train") if isinstance(raw, dict) else None
    return isinstance(train, dict) and train.get("model") == "emtm" and bool(train.get("teachers"))


def _floats(values: Any) -> list[float]:
    return [round(float(x), 6) for x in values]


class TeacherExamples:
    """The training examples of a distilled run, explained one at a time (thread-safe)."""

    def __init__(self, model_dir: str | Path, options: TeacherOptions):
        from emtm.engine.checkpoint import load_run
        from emtm.experiments.show import TeacherView

        self.view = TeacherView(
            load_run(model_dir),
            options.data,
            options.split,
            list(options.caches) if options.caches else None,
        )
        self.teachers = [cache.meta.teacher for cache in self.view.caches]
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, model_dir: str | Path, options: TeacherOptions | None
    ) -> tuple[TeacherExamples | None, str]:
        """The view for `model_dir`, or None and why not. Explicit options that fail raise EmtmError."""
        options = options or TeacherOptions()
        model_dir = Path(model_dir)
        if not options.enabled:
            return None, "switched off (--no-teachers)"
        if not is_distilled_run(model_dir):
            why = f"--model {model_dir} is not a run directory written by `emtm distill`"
            if options.explicit:
                raise EmtmError(f"--teachers/--data/--split: {why}; serve the distilled run itself")
            return None, why
        try:
            view = cls(model_dir, options)
        except EmtmError as err:
            if options.explicit:
                raise
            return None, f"the run's teacher caches or data cannot be read ({err})"
        return view, ""

    def summary(self) -> str:
        return f"{', '.join(self.teachers)} on {self.view.split} ({len(self.view)} queries)"

    def listing(self, offset: int, limit: int) -> dict[str, Any]:
        """The examples offset..offset+limit: index, ids, query, duration, ground truth."""
        samples = self.view.samples[offset : offset + limit]
        return {
            "split": self.view.split,
            "teachers": self.teachers,
            "total": len(self.view),
            "offset": offset,
            "examples": [
                {
                    "index": offset + i,
                    "sample_id": s.sample_id,
                    "video_id": s.video_id,
                    "query": s.sentence,
                    "duration": s.duration,
                    "ground_truth": {"start": s.start, "end": s.end},
                }
                for i, s in enumerate(samples)
            ],
        }

    def example(self, index: int) -> dict[str, Any]:
        """Example `index`: the teachers' distributions with their KAU weights, the ensemble, the student."""
        with self._lock:
            q = self.view.explain(index)
        s, n = q.sample, q.teacher_dists.shape[-1]
        step = s.duration / n
        return {
            "index": index,
            "split": self.view.split,
            "sample_id": s.sample_id,
            "video_id": s.video_id,
            "query": s.sentence,
            "duration": s.duration,
            "ground_truth": {"start": s.start, "end": s.end},
            "n_clips": n,
            "times": [round((i + 0.5) * step, 4) for i in range(n)],
            "teachers": [
                {
                    "name": name,
                    "kau_weights": {"start": float(q.weights[k, 0]), "end": float(q.weights[k, 1])},
                    "start": _floats(q.teacher_dists[k, 0]),
                    "end": _floats(q.teacher_dists[k, 1]),
                }
                for k, name in enumerate(q.teachers)
            ],
            "ensemble": {"start": _floats(q.ensemble[0]), "end": _floats(q.ensemble[1])},
            "student": {
                "start": _floats(q.student[0]),
                "end": _floats(q.student[1]),
                "moment": {"start": float(q.window[0]), "end": float(q.window[1])},
            },
        }
