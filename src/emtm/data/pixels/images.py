"""Fashion-MNIST for the real-pixel benchmark: reading the four idx files (`read_idx`, `load_images`)
and the class names (`CLASSES`)."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emtm.errors import DataError

PathLike = str | os.PathLike[str]
DEFAULT_IMAGES = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MISSING_IMAGES = (
    "Fashion-MNIST images not found: install Debian's package (apt-get install dataset-fashion-mnist, "
    f"which puts them in {DEFAULT_IMAGES}) or pass --images DIR, a folder with the four standard idx files "
    "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, "
    "each optionally .gz)"
)


def read_idx(path: PathLike) -> np.ndarray:
    """An idx file (optionally gzipped) as a numpy array: 2 zero bytes, a type code, the number of
    dimensions, each dimension as a big-endian uint32, then the raw values."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read this idx file ({exc})", path=path) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError("not an idx file: expected 2 zero bytes and a type code (0x08 for uint8)", path=path)
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx header cut short: {ndim} dimensions need {header} bytes", path=path)
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != need:
        raise DataError(
            f"idx file of shape {shape} should be {need} bytes, found {len(raw)}: truncated or corrupt",
            path=path,
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def idx_paths(root: PathLike | None = None) -> dict[str, Path]:
    """The four Fashion-MNIST idx files in `root` (default: Debian's folder), .gz or not."""
    root = Path(root).expanduser() if root is not None else DEFAULT_IMAGES
    found = {}
    for key, name in IDX_FILES.items():
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            raise DataError(f"{MISSING_IMAGES}; missing {name}[.gz]", path=root)
    return found


@dataclass
class ImageSet:
    """Fashion-MNIST: (N, 28, 28) uint8 images (bright item on black) and their class labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    paths: dict[str, Path] = field(default_factory=dict)

    def pool(self, split: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """The images of `split` ('train' and 'val' use the training images) and their indices per class."""
        images, labels = (
            (self.test_images, self.test_labels)
            if split == "test"
            else (self.train_images, self.train_labels)
        )
        return images, [np.flatnonzero(labels == c) for c in range(len(CLASSES))]


def load_images(root: PathLike | None = None) -> ImageSet:
    """Read Fashion-MNIST's four idx files from `root` (default Debian's folder) and check their shapes."""
    paths = idx_paths(root)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(
                f"expected (N, 28, 28) uint8 images, found {images.dtype} {images.shape}",
                path=paths[f"{split}_images"],
            )
        if labels.shape != (images.shape[0],) or labels.size == 0 or labels.max() >= len(CLASSES):
            raise DataError(
                f"expected {images.shape[0]} labels in 0..9, found shape {labels.shape}",
                path=paths[f"{split}_labels"],
            )
        missing = sorted(set(range(len(CLASSES))) - set(np.unique(labels).tolist()))
        if missing:
            raise DataError(f"no images of class(es) {missing}", path=paths[f"{split}_labels"])
    return ImageSet(**arrays, paths=paths)
