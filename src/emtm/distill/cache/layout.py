"""The teacher cache file format: what a cache holds, its HDF5 layout and its metadata.

A cache holds, for every query (sample) of one split, the teacher's start and end distributions after
`emtm.distill.unify`, on the clip grid the student sees for that sample: n = min(T, max_video_len) clips,
where T is the video's feature length (exactly `len(resample_features(feats, max_video_len))`, i.e. the
valid part of the batch's video_mask). Entries are keyed by sample_id, never by position in a list, so a
cache survives reordering, filtering and held-out validation videos (a "train" cache covers the whole
train file).

Only the unified distributions and metadata are stored, not the teachers' raw native outputs (2D maps
alone would be N x N per query): the file stays small and the distillation loop reads two short rows per
sample. The unify options (temperature, sigma_frac, map_reduce) are therefore baked in and recorded in the
metadata; changing them means rebuilding the cache.

HDF5 layout (version `CACHE_VERSION`)::

    attrs["meta"]        CacheMeta as a JSON string
    samples/<key>        float32 (2, n): row 0 the start, row 1 the end distribution over the n clips;
                         attrs["n"] = n. <key> is the sample_id percent-encoded (urllib.parse.quote with
                         no safe characters: "/" -> "%2F", "%" -> "%25", a leading "." -> "%2E"), so any
                         id is a valid HDF5 name; ids like "S0001A_2" are stored unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from emtm.errors import DataError

CACHE_VERSION = 1
IMPORT_FORMATS = ("span", "2dmap", "proposals", "regression")

PathLike = str | os.PathLike[str]


@dataclass
class CacheMeta:
    """What a cache was built from and for; stored as JSON in the file's "meta" attribute."""

    teacher: str  # the run's model name, or the name given to imported outputs
    output_form: str  # the teacher's native form (one of IMPORT_FORMATS)
    source: str  # the run directory, or the imported file
    dataset: str  # the data.yaml
    split: str
    annotation_file: str
    annotation_sha256: str
    rule: str  # the unify rule applied (= output_form)
    temperature: float
    sigma_frac: float
    map_reduce: str
    max_video_len: int  # of the student grid
    created: str  # ISO 8601, UTC
    version: int = CACHE_VERSION
    folds: int = 0  # k of an out-of-fold cache (every entry from the run that did not see it), else 0
    # The fitted calibration (emtm.distill.calibrate.Calibration as a dict: parameter, value, held-out
    # loss at it and at the default, queries, split), or None when the options were given or defaulted.
    calibration: dict[str, Any] | None = None
    # The seed of the validation videos the teacher's run held out of train (None: imported outputs, or
    # a cache written before this was recorded); students distilled from it hold out the same videos.
    holdout_seed: int | None = None


def sample_key(sample_id: str) -> str:
    """A sample_id as an HDF5 name: percent-encoded, never "", ".", ".." or containing "/"."""
    if not sample_id:
        raise DataError("empty sample_id cannot be cached")
    key = quote(sample_id, safe="")
    return "%2E" + key[1:] if key.startswith(".") else key
