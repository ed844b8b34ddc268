"""Teacher caches: each teacher's outputs computed once, stored on the student grid, read lazily.

The modules: `layout` (the HDF5 format and its metadata), `write` (the atomic write shared by export and
import), `read` (`TeacherCache`, `check_compatible`), `imports` (`import_outputs`) and `files` (reading
the files it takes). Exporting a trained emtm teacher (`export_teacher`, out-of-fold caches included)
runs the model, so it lives a layer up, in `emtm.engine.teachers`.

The layouts `import_outputs` reads (outputs of models trained in other codebases). No format is ever
unpickled (np.load(allow_pickle=False)): an .npz with object arrays is refused. sample_ids must be those
of the split's annotation file; unknown ids are an error naming the file, the row or line and the id,
and every sample of the split must be present unless allow_missing=True.

* "span" (.npz): "sample_ids" (S,) str or int; "start_logits", "end_logits" (S, Lt) float, padded rows
  on the teacher's own grid; optional "lengths" (S,) int, each row's valid length (default Lt). Values
  past a row's length are ignored. Each row is softmaxed (/ temperature) on its own grid and resampled onto
  the student grid with clip starts/ends aligned (see unify's grid convention).
* "2dmap" (.npz): "sample_ids" (S,); "scores" (S, N, N), cell (i, j) = the moment [i/N, (j+1)/N] of the
  video; optional "mask" (S, N, N) or (N, N) bool, the valid cells (default: the upper triangle j >= i);
  optional "is_logits" bool, scalar or (S,) (default False: scores are probabilities in [0, 1]).
* "proposals" (.jsonl): one JSON object per line,
  {"sample_id": "...", "unit": "seconds" | "fraction", "windows": [[s, e], ...], "scores": [...]}; the
  scores (>= 0) weight the windows. Moment-DETR's [[s, e, score], ...] is also accepted as "windows"
  without "scores". "unit" is required: seconds are divided by the sample's annotated duration.
* "regression" (.jsonl): {"sample_id": "...", "unit": "seconds" | "fraction", "window": [s, e]}.

Windows are clipped to the video; a start after its end is an error.
"""

from emtm.distill.cache.files import UNITS
from emtm.distill.cache.imports import import_outputs
from emtm.distill.cache.layout import CACHE_VERSION, IMPORT_FORMATS, CacheMeta
from emtm.distill.cache.read import TeacherCache, check_compatible, teachers_holdout_seed
from emtm.distill.cache.write import write_cache

__all__ = [
    "CACHE_VERSION",
    "IMPORT_FORMATS",
    "UNITS",
    "CacheMeta",
    "TeacherCache",
    "teachers_holdout_seed",
    "check_compatible",
    "import_outputs",
    "write_cache",
]
