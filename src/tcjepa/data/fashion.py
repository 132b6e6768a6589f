"""Fashion-MNIST from local IDX files, as a real-image probe for frozen encoders.

Why this dataset: `shapes` is synthetic, so a probe on it cannot tell whether an encoder learned anything
that transfers to real photographs' statistics. Fashion-MNIST is real (greyscale product photos), small
enough to hold in memory, and Debian/Ubuntu ship it as a package (``dataset-fashion-mnist``), so the
probe needs no download at run time: the files are either on disk or the code says how to get them.

Layout: the four official gzipped (or plain) IDX files in one folder, by default :data:`FASHION_DIR`
(where the Debian package puts them); the environment variable ``TCJEPA_FASHION_MNIST`` overrides it, and
every function also takes an explicit ``root``. Splits: "test" is the official t10k set; "val" is a seeded
held-out slice of the official training set and "train" is the rest of it, so they never overlap.

Items match the other datasets of this package: ``{"image": (3, S, S) float32 in [0, 1], "labels":
{"class": long scalar}, "index": int}``; the grey image is resized from 28 px with bilinear interpolation
(antialiased when shrinking) and replicated to 3 channels, so encoders built for RGB take it unchanged.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .arguments import int_arg, item_index

__all__ = [
    "CLASS_NAMES",
    "ENV_VAR",
    "FASHION_DIR",
    "FILES",
    "INSTALL_HINT",
    "SPLITS",
    "FashionMNIST",
    "fashion_available",
    "fashion_root",
    "read_idx",
]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist installs them
ENV_VAR = "TCJEPA_FASHION_MNIST"
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SIDE = 28

# Label order of the official release (label k is CLASS_NAMES[k]).
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# (images, labels) file stems per official set; each may exist as "<stem>.gz" or plain "<stem>".
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

INSTALL_HINT = (
    "Get it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs to "
    f"{FASHION_DIR}) or set {ENV_VAR} to a folder holding the four IDX files "
    f"({', '.join(stem + '.gz' for pair in FILES.values() for stem in pair)}; plain, ungzipped files work too)."
)

# IDX type codes (third magic byte) -> element dtype; IDX stores multi-byte values big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Parse one IDX file (gzipped or plain, detected from its first bytes) into a native-endian array.

    Checks the magic number (two zero bytes, a known type code, the number of dimensions; ``ndim`` if given),
    the dimension header, and that the payload holds exactly prod(dims) elements. Anything wrong, including
    a truncated or corrupt gzip stream, raises a ValueError that names the file and the problem.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # truncated or damaged compressed stream
        raise ValueError(f"{path}: the gzip stream is truncated or corrupt ({e}); re-fetch the file.") from None

    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX file (4-byte magic number missing).")
    zero0, zero1, code, dims_n = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero0 or zero1:
        raise ValueError(
            f"{path}: not an IDX file: magic number 0x{magic:08X} should start with two zero bytes "
            "(e.g. 0x00000803 for images, 0x00000801 for labels)."
        )
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: magic number 0x{magic:08X} has unknown IDX type code 0x{code:02X} (known: {known}).")
    if dims_n == 0:
        raise ValueError(f"{path}: magic number 0x{magic:08X} declares 0 dimensions.")
    if ndim is not None and dims_n != ndim:
        raise ValueError(
            f"{path}: magic number 0x{magic:08X} declares {dims_n} dimension(s), expected {ndim} "
            f"(magic 0x{0x800 | ndim:08X} for uint8); is this the right file?"
        )

    header = 4 + 4 * dims_n
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated header: {dims_n} dimension sizes need {header} bytes, file has {len(data)}."
        )
    dims = struct.unpack(f">{dims_n}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow on a bogus header
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: payload {what}: dims {tuple(dims)} of {dtype.itemsize}-byte values need {expected} bytes "
            f"after the {header}-byte header, found {got}."
        )
    # astype copies, so the result is writable and owns its memory (not a view on `data`).
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def fashion_root(root: str | Path | None = None) -> Path:
    """The folder to read: ``root`` if given, else ``$TCJEPA_FASHION_MNIST`` if set and non-empty, else FASHION_DIR."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else FASHION_DIR


def _source(root: str | Path | None) -> str:
    """Where fashion_root's answer came from, for error messages."""
    if root is not None:
        return "the root argument"
    return f"${ENV_VAR}" if os.environ.get(ENV_VAR, "").strip() else "the default FASHION_DIR"


def _find(folder: Path, stem: str) -> Path | None:
    """``<stem>.gz`` or plain ``<stem>`` in ``folder``, whichever exists (gzipped first)."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _paths(official: str, root: str | Path | None) -> tuple[Path, Path]:
    """The (images, labels) files of an official set, or a FileNotFoundError that says how to get them."""
    folder = fashion_root(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {folder} (from {_source(root)}) does not exist. {INSTALL_HINT}")
    found = [_find(folder, stem) for stem in FILES[official]]
    missing = [str(folder / (stem + ".gz")) for stem, p in zip(FILES[official], found) if p is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST file(s) missing in {folder} (from {_source(root)}): {', '.join(missing)} "
            f"(or the same without .gz). {INSTALL_HINT}"
        )
    return found[0], found[1]  # type: ignore[return-value]


def fashion_available(root: str | Path | None = None) -> bool:
    """True when all four IDX files exist under ``fashion_root(root)`` (not parsed; FashionMNIST checks them)."""
    folder = fashion_root(root)
    return all(_find(folder, stem) is not None for pair in FILES.values() for stem in pair)


def _load(official: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of an official set, cross-checked."""
    image_path, label_path = _paths(official, root)
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1)
    for path, array in ((image_path, images), (label_path, labels)):
        if array.dtype != np.uint8:
            raise ValueError(f"{path}: element type {array.dtype}, expected uint8 (IDX type code 0x08).")
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"{image_path}: images are {images.shape[1:]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}.")
    if len(images) != len(labels):
        raise ValueError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels.")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{label_path}: label {labels.max()} is outside 0..{len(CLASS_NAMES) - 1}.")
    return images, labels.astype(np.int64)


class FashionMNIST(Dataset):
    """Fashion-MNIST split held in memory as uint8, resized and made 3-channel per item.

    ``split``: "train" (official training set minus the val slice), "val" (``val_size`` images of the
    official training set chosen by a permutation seeded with ``seed``) or "test" (official t10k, file
    order). ``size`` keeps the first ``size`` items of the split, i.e. after the permutation for
    train/val, so small subsets are roughly class-balanced. ``source_index[i]`` is the row of item i in
    its official file; ``targets`` holds the split's labels (int64) for probes that need them all at once.
    """

    def __init__(
        self,
        split: str,
        image_size: int = 64,
        root: str | Path | None = None,
        size: int | None = None,
        val_size: int = 5000,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not a Fashion-MNIST split; expected one of {SPLITS}.")
        self.split = split
        self.image_size = int_arg("image_size", image_size, 1, None)
        self.seed = int_arg("seed", seed, 0, None, "Seeds must be non-negative (they seed numpy's RNG).")
        self.root = fashion_root(root)
        images, labels = _load("test" if split == "test" else "train", root)

        if split == "test":
            self.val_size = val_size  # unused: test never touches the training file
            order = np.arange(len(images))
        else:
            n = len(images)
            self.val_size = int_arg(
                "val_size", val_size, 1 if split == "val" else 0, n - 1, f"The training file holds {n} images."
            )
            perm = np.random.default_rng(self.seed).permutation(n)
            order = perm[: self.val_size] if split == "val" else perm[self.val_size :]
        if size is not None:
            order = order[: int_arg("size", size, 1, len(order), f"The {split} split holds {len(order)} items.")]

        self.source_index = order
        self.images = np.ascontiguousarray(images[order])  # fancy indexing copies: only the split stays alive
        self.targets = labels[order]

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return (
            f"FashionMNIST(split={self.split!r}, image_size={self.image_size}, root={str(self.root)!r}, "
            f"size={len(self)}, val_size={self.val_size}, seed={self.seed})"
        )

    def __getitem__(self, index: int) -> dict:
        i = item_index(index, len(self), self)
        grey = torch.from_numpy(self.images[i]).to(torch.float32).div_(255.0)[None, None]  # (1, 1, 28, 28)
        s = self.image_size
        if s != IMAGE_SIDE:
            # antialias only matters (and is only allowed to act) when shrinking
            grey = F.interpolate(grey, size=(s, s), mode="bilinear", align_corners=False, antialias=s < IMAGE_SIDE)
            grey = grey.clamp_(0.0, 1.0)  # float rounding can step a hair outside [0, 1]
        return {
            "image": grey[0].repeat(3, 1, 1),  # a real copy per channel, safe for in-place transforms
            "labels": {"class": torch.tensor(int(self.targets[i]), dtype=torch.long)},
            "index": i,
        }
