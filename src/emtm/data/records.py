"""The one record every annotation reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One query: a sentence and the moment [start, end] (seconds) it describes in a video."""

    sample_id: str
    video_id: str
    duration: float
    start: float
    end: float
    sentence: str


@dataclass
class ReadReport:
    """What a reader did to one file: how many queries it read, kept, clipped and dropped."""

    path: str
    n_read: int = 0
    n_kept: int = 0
    n_clipped: int = 0
    n_dropped: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.path}: read {self.n_read}, kept {self.n_kept}, "
            f"clipped to duration {self.n_clipped}, dropped {self.n_dropped}"
        )
