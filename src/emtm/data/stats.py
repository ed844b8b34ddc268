"""Summary statistics of clip features, to tell at a glance whether a store looks like real features.

The definitions are those of `stats_definitions` in ../shared/data/real-features/stats.json (its
`convert.py`), so the numbers of a real feature file and of any store (a folder of {vid}.npy, an
HDF5 file, an `emtm extract` folder, or one .npy file) can be set side by side:

- mean / std / min / max: over all T*D values (float64);
- frac_exact_zero, frac_negative: share of values == 0 and < 0;
- row_l2_norm_mean (min, max): over the rows (clips) of ||x_t||_2;
- cos_adjacent_mean: mean cosine(x_t, x_{t+1});
- cos_random_pairs_mean: mean cosine(x_i, x_j) over all pairs i < j of a video, or, past 5000 pairs,
  over 5000 random pairs i != j drawn with numpy default_rng(0);
- per_dim_temporal_std_mean: mean over dims of the std over time;
- frac_dims_always_zero: share of dims that are 0 in every row.

Over a store of several videos the values, rows, adjacent pairs and random pairs of every video are
pooled (each pair and each value counts once), per_dim_temporal_std_mean is the mean over videos and
frac_dims_always_zero counts the dims that are 0 in every row of every video. For one video this is
exactly the single-file definition.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emtm.data.features import FeatureStore, NpyDirStore, open_feature_store, resample_features
from emtm.errors import ConfigError, DataError

REAL_FEATURES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real-features"
DEFAULT_REFERENCE = "activitynet_v_GGSY1Qvo990_i3d_rgb"
# The statistics `emtm data stats` prints, in this order, with their labels.
SHOWN = {
    "mean": "mean",
    "std": "std",
    "frac_exact_zero": "share of exact zeros",
    "frac_negative": "share of negatives",
    "row_l2_norm_mean": "row L2 (mean)",
    "row_l2_norm_min": "row L2 (min)",
    "row_l2_norm_max": "row L2 (max)",
    "cos_adjacent_mean": "cosine, adjacent clips",
    "cos_random_pairs_mean": "cosine, random pairs",
    "per_dim_temporal_std_mean": "per-dim std over time",
    "frac_dims_always_zero": "share of dims always 0",
}
# A copy of stats.json's files["activitynet_v_GGSY1Qvo990_i3d_rgb.npy"]["stats"] (I3D rgb, 5 x 1024,
# v-iashin/video_features reference of ActivityNet v_GGSY1Qvo990), used when that folder is absent.
BUILTIN_I3D_RGB: dict[str, float] = {
    "mean": 0.19355834083306434,
    "std": 0.22805887959987464,
    "frac_exact_zero": 0.006640625,
    "frac_negative": 0.0,
    "row_l2_norm_mean": 9.53356545519652,
    "row_l2_norm_min": 7.829304183361986,
    "row_l2_norm_max": 10.06614914329468,
    "cos_adjacent_mean": 0.8991243687080843,
    "cos_random_pairs_mean": 0.829995614309286,
    "per_dim_temporal_std_mean": 0.08083186128764305,
    "frac_dims_always_zero": 0.0,
}
MAX_PAIRS = 5000


def _unit_rows(x64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(x64, axis=1)
    return norms, x64 / np.where(norms > 0, norms, 1.0)[:, None]


def random_pair_cosines(xn: np.ndarray, seed: int = 0, max_pairs: int = MAX_PAIRS) -> np.ndarray:
    """Cosines of all pairs i < j of unit rows `xn`, or of `max_pairs` random pairs i != j past that."""
    n = xn.shape[0]
    i, j = np.triu_indices(n, k=1)
    if len(i) > max_pairs:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=max_pairs)
        j = rng.integers(0, n - 1, size=max_pairs)
        j = np.where(j >= i, j + 1, j)
    return (xn[i] * xn[j]).sum(1)


@dataclass
class _Pool:
    """Running sums over the videos of a store (Chan et al.'s pairwise update for the variance)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = float("inf")
    hi: float = float("-inf")
    zeros: int = 0
    negatives: int = 0
    norms: list[np.ndarray] = field(default_factory=list)
    adjacent: list[np.ndarray] = field(default_factory=list)
    pairs: list[np.ndarray] = field(default_factory=list)
    temporal_std: list[float] = field(default_factory=list)
    nonzero_dims: np.ndarray | None = None
    videos: int = 0

    def add(self, x: np.ndarray, seed: int) -> None:
        x64 = x.astype(np.float64)
        n, mean = x64.size, float(x64.mean())
        m2 = float(((x64 - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta**2 * self.n * n / total
        self.mean += delta * n / total
        self.n = total
        self.lo, self.hi = min(self.lo, float(x64.min())), max(self.hi, float(x64.max()))
        self.zeros += int((x == 0).sum())
        self.negatives += int((x < 0).sum())
        norms, xn = _unit_rows(x64)
        self.norms.append(norms)
        self.adjacent.append((xn[:-1] * xn[1:]).sum(1))
        self.pairs.append(random_pair_cosines(xn, seed))
        self.temporal_std.append(float(x64.std(axis=0).mean()))
        used = np.abs(x).max(axis=0) > 0
        self.nonzero_dims = used if self.nonzero_dims is None else self.nonzero_dims | used
        self.videos += 1

    def result(self) -> dict[str, Any]:
        norms = np.concatenate(self.norms)
        adjacent, pairs = np.concatenate(self.adjacent), np.concatenate(self.pairs)
        assert self.nonzero_dims is not None
        return {
            "videos": self.videos,
            "rows": int(norms.size),
            "dim": int(self.nonzero_dims.size),
            "mean": self.mean,
            "std": float(np.sqrt(self.m2 / self.n)),
            "min": self.lo,
            "max": self.hi,
            "frac_exact_zero": self.zeros / self.n,
            "frac_negative": self.negatives / self.n,
            "row_l2_norm_mean": float(norms.mean()),
            "row_l2_norm_min": float(norms.min()),
            "row_l2_norm_max": float(norms.max()),
            "zero_norm_rows": int((norms == 0).sum()),
            "cos_adjacent_mean": float(adjacent.mean()) if adjacent.size else None,
            "cos_random_pairs_mean": float(pairs.mean()) if pairs.size else None,
            "per_dim_temporal_std_mean": float(np.mean(self.temporal_std)),
            "frac_dims_always_zero": float((~self.nonzero_dims).mean()),
        }


def array_stats(x: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The statistics of one (T, D) array (stats.json's definitions)."""
    x = np.asarray(x)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"expected a (T, D) array with T, D > 0, got shape {x.shape}")
    pool = _Pool()
    pool.add(x, seed)
    return pool.result()


def store_stats(store: FeatureStore, max_videos: int | None = None, seed: int = 0) -> dict[str, Any]:
    """The statistics pooled over the videos of a store (the first `max_videos` sorted ids; default all)."""
    if max_videos is not None and max_videos < 1:
        raise ConfigError(f"--max-videos {max_videos}: must be >= 1")
    pool = _Pool()
    for video_id in store.video_ids()[:max_videos]:
        pool.add(store.load(video_id), seed)
    return pool.result()


def clip_mean_std(
    store: FeatureStore, video_ids: list[str], max_len: int | None = None, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (float32, (D,)) over every clip of `video_ids`, each video resampled
    to at most `max_len` clips as a model sees it; a dimension that never varies gets std 1.
    `progress`: a progress bar over the videos."""
    from tqdm.auto import tqdm

    if not video_ids:
        raise ValueError("clip_mean_std needs at least one video")
    total = squares = None
    count = 0
    for video_id in tqdm(video_ids, desc="input statistics", unit="video", disable=not progress, leave=False):
        x = store.load(video_id)
        x = (resample_features(x, max_len) if max_len else x).astype(np.float64)
        total = x.sum(0) if total is None else total + x.sum(0)
        squares = (x**2).sum(0) if squares is None else squares + (x**2).sum(0)
        count += x.shape[0]
    assert total is not None and squares is not None
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std = np.where(std > 1e-6 * max(float(np.abs(mean).max()), 1.0), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


class _OneNpy(NpyDirStore):
    """One {video_id}.npy file read as a store of that one video (the folder's other files ignored)."""

    def __init__(self, file: Path):
        super().__init__(file.parent)
        self._ids = [file.name[: -len(".npy")]]


def open_features(path: str | os.PathLike) -> FeatureStore:
    """A feature store (`open_feature_store`: folder of .npy, .h5/.hdf5), or one .npy file as a store."""
    path = Path(path).expanduser()
    if path.is_file() and path.name.endswith(".npy"):
        return _OneNpy(path)
    return open_feature_store(path)


def features_stats(path: str | os.PathLike, max_videos: int | None = None) -> dict[str, Any]:
    """`store_stats` of the features at `path` (`open_features`)."""
    return store_stats(open_features(path), max_videos)


# Mean cosine of random clip pairs above which clips of one video share a large positive mean per
# dimension, as real I3D features do (0.83 for the reference; `hard-i3d` 0.82, `pixels` 0.60, the
# gaussian synthetic features 0.05; `unseen` 0.81, `small-hard-i3d` 0.82). On those three benchmarks
# standardised inputs gave the student +7.07, +11.62 and +2.43 R1@0.5, 3 seeds, only the first beyond
# noise (docs/RESULTS.md, "Does the student generalise?").
ALIKE_CLIPS = 0.7


def input_advice(stats: dict[str, Any]) -> str | None:
    """What to set when training on features with these statistics, or None."""
    cos = stats.get("cos_random_pairs_mean")
    if cos is None or cos < ALIKE_CLIPS:
        return None
    return (
        f"clips of one video are alike (mean cosine of random pairs {cos:.2f}; real I3D: about 0.83). "
        "On benchmarks with features like these, standardised inputs raised the student's R1@0.5 "
        "(+2 to +12 at 3 seeds): keep the student's default model_options.video_norm=standardize "
        "with `emtm train` and `emtm distill`, rather than none "
        '(docs/RESULTS.md, "Does the student generalise?")'
    )


def load_reference(reference: str | None = None) -> tuple[str, dict[str, Any]]:
    """(label, statistics) to compare against.

    `reference` is the name of a file of ../shared/data/real-features/stats.json (with or without
    .npy; default the I3D rgb fixture `DEFAULT_REFERENCE`), a JSON file (an `emtm data stats --json`
    output, or any object with the statistics at the top or under "stats"), or features (`open_features`).
    Without the shared folder the default is `BUILTIN_I3D_RGB`, a copy of that fixture's numbers.
    """
    name = reference or DEFAULT_REFERENCE
    stats_json = REAL_FEATURES / "stats.json"
    key = name if name.endswith(".npy") else f"{name}.npy"
    if "/" not in name and stats_json.is_file():
        files = _read_json(stats_json).get("files", {})
        if key in files:
            return f"{key} (stats.json)", files[key]["stats"]
        if reference is None:
            raise DataError(f"the default reference {key} is not among its files", path=stats_json)
    if reference is None:
        return f"{key} (built-in copy of stats.json)", dict(BUILTIN_I3D_RGB)
    path = Path(reference).expanduser()
    if path.is_file() and path.suffix.lower() == ".json":
        data = _read_json(path)
        stats = data.get("stats", data)
        if not isinstance(stats, dict) or not any(k in stats for k in SHOWN):
            raise DataError(
                "no statistics in this JSON; expected an object with keys such as mean, std, "
                "frac_exact_zero "
                '(at the top or under "stats"), e.g. written by emtm data stats --json',
                path=path,
            )
        return path.name, stats
    if path.exists():
        return path.name, features_stats(path)
    known = sorted(_read_json(stats_json).get("files", {})) if stats_json.is_file() else []
    names = ", ".join(k[: -len(".npy")] for k in known) or "absent"
    raise DataError(
        f"--reference {reference!r}: not a file of {stats_json} ({names}), "
        "a statistics .json, or features (a .npy file, a folder of .npy, an .h5)"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read as JSON ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", path=path)
    return data
