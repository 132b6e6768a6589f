"""Tests for the Fashion-MNIST reader and dataset, on tiny IDX files written here (no Debian package needed).

The fake training file holds 30 images whose pixel (0, 0) is 6 * row, so any item tells which file row it
came from; labels are row % 10, so a wrong image/label pairing shows too. One test uses the real files
when they are installed and is skipped otherwise.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tcjepa.data.fashion import (
    CLASS_NAMES,
    ENV_VAR,
    FashionMNIST,
    fashion_available,
    fashion_root,
    read_idx,
)

N_TRAIN, N_TEST, VAL = 30, 10, 10
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file, written from the spec: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    big = array.astype(array.dtype.newbyteorder(">"))
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + big.tobytes()


def pattern(n: int, offset: int = 0) -> np.ndarray:
    """n 28x28 uint8 images; image k has value 6 * (k + offset) + r + c at (r, c), so (0, 0) identifies it."""
    k, r, c = np.meshgrid(np.arange(n) + offset, np.arange(28), np.arange(28), indexing="ij")
    return ((6 * k + r + c) % 256).astype(np.uint8)  # (0, 0) = 6k < 256 for k < 43


def write_set(folder: Path, official: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(STEMS[official], (images, labels)):
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


def write_fashion(folder: Path, gz: bool = True) -> Path:
    """30 train + 10 test patterned images; test images continue the numbering (rows 30..39)."""
    write_set(folder, "train", pattern(N_TRAIN), (np.arange(N_TRAIN) % 10).astype(np.uint8), gz)
    write_set(folder, "test", pattern(N_TEST, offset=N_TRAIN), ((np.arange(N_TEST) * 3) % 10).astype(np.uint8), gz)
    return folder


def row_of(item: dict) -> int:
    """The pattern number of an item read at image_size=28 (pixel (0, 0) is 6 * number)."""
    return round(item["image"][0, 0, 0].item() * 255) // 6


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion(tmp_path_factory.mktemp("fashion"))


# ---- read_idx ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_read_idx_round_trips_exact_values(tmp_path: Path, gz: bool) -> None:
    images = pattern(5)
    labels = np.array([9, 0, 3, 7, 1], dtype=np.uint8)
    shorts = np.array([[-300, 2], [1, 32000]], dtype=np.int16)  # a multi-byte type checks the byte order
    for name, array, code in (("img", images, 0x08), ("lab", labels, 0x08), ("i16", shorts, 0x0B)):
        data = idx_bytes(array, code)
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        out = read_idx(path)
        assert out.shape == array.shape and out.dtype == array.dtype
        np.testing.assert_array_equal(out, array)
        assert out.flags.writeable
    # the magic numbers of the real files, written by hand
    assert idx_bytes(images)[:4] == b"\x00\x00\x08\x03" and idx_bytes(labels)[:4] == b"\x00\x00\x08\x01"


# name -> (file bytes, what the error must say)
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "wrong_magic": (b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"\x00\x01", "two zero bytes"),
    "bad_type": (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x01", "type code 0x07"),
    "zero_dims": (b"\x00\x00\x08\x00", "0 dimensions"),
    "short_magic": (b"\x00\x00", "too short"),
    "short_header": (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
    "truncated": (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01\x02", "payload truncated"),
    "trailing": (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x01\x02", "trailing bytes"),
}


@pytest.mark.parametrize("name", BAD_FILES)
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_read_idx_rejects_bad_files_naming_them(tmp_path: Path, name: str, gz: bool) -> None:
    data, message = BAD_FILES[name]
    path = tmp_path / f"{name}-idx1-ubyte{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_cut_gzip_stream_and_wrong_ndim(tmp_path: Path) -> None:
    full = gzip.compress(idx_bytes(pattern(4)))
    cut = tmp_path / "cut-images-idx3-ubyte.gz"
    cut.write_bytes(full[: len(full) // 2])  # a download that stopped half way
    with pytest.raises(ValueError, match="gzip stream") as info:
        read_idx(cut)
    assert str(cut) in str(info.value)
    # a labels file where images are expected (magic 0x00000801, not 0x00000803)
    labels = tmp_path / "labels.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.arange(4, dtype=np.uint8))))
    with pytest.raises(ValueError, match=r"0x00000801 declares 1 dimension\(s\), expected 3") as info:
        read_idx(labels, ndim=3)
    assert str(labels) in str(info.value)


# ---- files and folders -------------------------------------------------------------------------------


def test_missing_folder_or_file_raises_with_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    missing = tmp_path / "nowhere"
    assert not fashion_available(missing)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        FashionMNIST("train", root=missing)
    assert str(missing) in str(info.value) and ENV_VAR in str(info.value)

    folder = write_fashion(tmp_path / "partial")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert not fashion_available(folder)
    FashionMNIST("train", root=folder, val_size=VAL)  # the train files are all there
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        FashionMNIST("test", root=folder)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in str(info.value)


def test_env_var_overrides_default_and_root_overrides_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = write_fashion(tmp_path / "plain", gz=False)  # also covers ungzipped files in a dataset
    monkeypatch.setenv(ENV_VAR, str(plain))
    assert fashion_root() == plain and fashion_available()
    test = FashionMNIST("test", image_size=28)
    assert len(test) == N_TEST and test.root == plain
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent"))
    assert not fashion_available()
    with pytest.raises(FileNotFoundError, match=ENV_VAR):
        FashionMNIST("test")
    assert len(FashionMNIST("test", root=plain)) == N_TEST  # an explicit root wins over the variable


def test_inconsistent_files_raise(tmp_path: Path) -> None:
    folder = write_fashion(tmp_path / "f")
    write_set(folder, "test", pattern(N_TEST), np.zeros(N_TEST - 1, dtype=np.uint8))
    with pytest.raises(ValueError, match="10 images but .* 9 labels"):
        FashionMNIST("test", root=folder)
    write_set(folder, "test", pattern(N_TEST), np.full(N_TEST, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="label 10 is outside 0..9"):
        FashionMNIST("test", root=folder)


# ---- splits ------------------------------------------------------------------------------------------


def test_train_and_val_are_disjoint_cover_train_file_and_are_seeded(fake: Path) -> None:
    def rows(split: str, seed: int) -> list[int]:
        ds = FashionMNIST(split, image_size=28, root=fake, val_size=VAL, seed=seed)
        out = [row_of(ds[i]) for i in range(len(ds))]
        assert out == ds.source_index.tolist()
        assert all(ds[i]["labels"]["class"].item() == r % 10 for i, r in enumerate(out))  # pairing kept
        return out

    train, val = rows("train", 0), rows("val", 0)
    assert len(train) == N_TRAIN - VAL and len(val) == VAL
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(N_TRAIN))
    assert rows("train", 0) == train and rows("val", 0) == val  # same seed, same split and order
    assert set(rows("val", 1)) != set(val)  # another seed holds out other images
    assert train != sorted(train)  # permuted, not file order


def test_size_takes_first_items_and_test_is_file_order(fake: Path) -> None:
    full = FashionMNIST("train", root=fake, val_size=VAL)
    small = FashionMNIST("train", root=fake, val_size=VAL, size=5)
    assert len(small) == 5 and small.source_index.tolist() == full.source_index[:5].tolist()
    test = FashionMNIST("test", image_size=28, root=fake, size=4)
    assert [row_of(test[i]) for i in range(4)] == [N_TRAIN + i for i in range(4)]
    assert [test[i]["labels"]["class"].item() for i in range(4)] == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="holds 20 items"):
        FashionMNIST("train", root=fake, val_size=VAL, size=21)
    with pytest.raises(ValueError, match="val_size"):
        FashionMNIST("val", root=fake)  # default val_size=5000 > 30 training images
    with pytest.raises(ValueError, match="split"):
        FashionMNIST("valid", root=fake)
    with pytest.raises(IndexError):
        test[4]


# ---- items -------------------------------------------------------------------------------------------


def test_item_format_and_exact_pixels_at_native_size(fake: Path) -> None:
    ds = FashionMNIST("val", image_size=28, root=fake, val_size=VAL)
    expected = pattern(N_TRAIN)
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert set(item) == {"image", "labels", "index"} and set(item["labels"]) == {"class"}
        image, label = item["image"], item["labels"]["class"]
        assert image.shape == (3, 28, 28) and image.dtype == torch.float32
        assert image.min().item() >= 0.0 and image.max().item() <= 1.0
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
        assert label.dtype == torch.long and label.dim() == 0
        assert isinstance(item["index"], int) and item["index"] == i
        row = int(ds.source_index[i])
        assert label.item() == row % 10 and CLASS_NAMES[label.item()] == CLASS_NAMES[row % 10]
        np.testing.assert_array_equal((image[0] * 255).round().to(torch.uint8).numpy(), expected[row])
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[9] == "Ankle boot"


@pytest.mark.parametrize("size", [32, 64])
def test_upsampling_keeps_range_channels_and_mean(fake: Path, size: int) -> None:
    native = FashionMNIST("test", image_size=28, root=fake)[3]["image"]
    image = FashionMNIST("test", image_size=size, root=fake)[3]["image"]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert image.min().item() >= 0.0 and image.max().item() <= 1.0
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    assert abs(image.mean().item() - native.mean().item()) < 0.02  # a smooth ramp: resizing keeps its mean


def test_downsampling_is_antialiased(tmp_path: Path) -> None:
    # One bright pixel at (0, 0): plain bilinear 28 -> 7 samples columns 1-2 of each 4 and would miss it.
    dot = np.zeros((1, 28, 28), dtype=np.uint8)
    dot[0, 0, 0] = 255
    folder = write_fashion(tmp_path / "f")
    write_set(folder, "test", dot, np.array([4], dtype=np.uint8))
    image = FashionMNIST("test", image_size=7, root=folder)[0]["image"]
    assert image.shape == (3, 7, 7)
    assert image[0, 0, 0].item() > 0.01 and image[:, 2:, 2:].abs().max().item() == 0.0


# ---- the real files, when installed ------------------------------------------------------------------


@pytest.mark.skipif(
    not fashion_available(), reason=f"Fashion-MNIST not installed at {fashion_root()} (apt or ${ENV_VAR})"
)
def test_real_fashion_mnist_counts_and_labels() -> None:
    labels = read_idx(sorted(fashion_root().glob("train-labels-idx1-ubyte*"))[0], ndim=1)  # .gz or plain
    assert labels.shape == (60000,) and np.bincount(labels).tolist() == [6000] * 10
    test = FashionMNIST("test", image_size=32)
    assert len(test) == 10000 and set(np.unique(test.targets).tolist()) == set(range(10))
    val = FashionMNIST("val", image_size=32, size=200)  # reads and checks the 60000-image file
    item = val[0]
    assert item["image"].shape == (3, 32, 32) and 0 <= item["labels"]["class"].item() <= 9
    assert len(np.unique(val.targets)) == 10  # a seeded 200-image subset holds every class
