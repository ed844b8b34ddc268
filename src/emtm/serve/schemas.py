"""The JSON bodies of `emtm serve`'s API: the request of `POST /ground` and every response model (they
are the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
