"""What `emtm ground` and the web demo check before they extract a video for a model: the feature
spec (backbone, fps, clip length) the model records, and that the extractor is that backbone."""

from __future__ import annotations

from typing import Any

from emtm.errors import EmtmError


def feature_spec(config: dict[str, Any], model: str) -> tuple[str, float, float]:
    """(backbone, fps, clip seconds) recorded with the model; refused when any is missing."""
    features = config.get("features", {})
    missing = [key for key in ("backbone", "fps", "clip_seconds") if not features.get(key)]
    if missing:
        raise EmtmError(
            f"{model}: the model does not record the {', '.join(missing)} of its training features, so "
            "emtm ground cannot extract matching ones; train it on an `emtm extract` folder (its "
            "features.json records them), or extract yourself and use emtm predict --features F.npy"
        )
    return str(features["backbone"]), float(features["fps"]), float(features["clip_seconds"])


def check_backbone(backbone: Any, recorded: str, dim: int, model: str) -> None:
    """The extractor must be the one the model's features came from: same name, same dimension."""
    if backbone.name != recorded:
        raise EmtmError(
            f"{model}: trained on {recorded!r} features, but the extractor is {backbone.name!r}; "
            "features of another backbone (or input size) mean nothing to this model"
        )
    if backbone.dim != dim:
        raise EmtmError(f"{model}: expects {dim}-d features, but {backbone.name!r} gives {backbone.dim}-d")
