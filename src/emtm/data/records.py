"""The one record every annotation reader produces, and the rule that ties its video id to a store key."""

from __future__ import annotations

from dataclasses import dataclass, field

# Video-file extensions: what `emtm extract` reads, and what the store-key rule below removes.
VIDEO_SUFFIXES = (
    ".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".3gp", ".ts",
)  # fmt: skip


def without_video_suffix(name: str) -> str:
    """`name` without a trailing video-file extension (case-insensitive): "s13-d21.avi" -> "s13-d21".

    This is the one rule that matches a video id to a feature-store key (every store applies it): the
    two match when they are equal, or when they are equal once a video-file extension is removed from
    each. So the TACoS id "s13-d21" (the annotation key "s13-d21.avi" without ".avi") finds the 2D-TAN
    HDF5 dataset "s13-d21.avi", and a Lighthouse vid "v1.mp4" finds `emtm extract`'s "v1.npy".
    """
    lower = name.lower()
    for suffix in VIDEO_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Sample:
    """One query: a sentence and the moment [start, end] (seconds) it describes in a video.

    `windows` holds every ground-truth window of the query as read (Lighthouse / QVHighlights files
    may give several), after clipping to [0, duration]; (start, end) is the first of them, the one
    training uses. Readers of one-window formats leave `windows` empty and it becomes
    ((start, end),). `ends_clipped` counts the windows whose end was past the duration and was
    clipped to it (the public Moment-DETR evaluator does not clip; the evaluator reports this count).
    """

    sample_id: str
    video_id: str
    duration: float
    start: float
    end: float
    sentence: str
    windows: tuple[tuple[float, float], ...] = ()
    ends_clipped: int = field(default=0, compare=False)  # what the reader did, not the query

    def __post_init__(self) -> None:
        if not self.windows:
            object.__setattr__(self, "windows", ((self.start, self.end),))


@dataclass
class ReadReport:
    """What a reader did to one file: how many queries it read, kept, clipped and dropped."""

    path: str
    n_read: int = 0
    n_kept: int = 0
    n_clipped: int = 0
    n_dropped: int = 0
    warnings: list[str] = field(default_factory=list)
    n_ends_clipped: int = 0  # windows of kept samples whose end was past the duration

    def summary(self) -> str:
        return (
            f"{self.path}: read {self.n_read}, kept {self.n_kept}, "
            f"clipped to duration {self.n_clipped}, dropped {self.n_dropped}"
        )
