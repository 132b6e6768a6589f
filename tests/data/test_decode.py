"""Image files of every common mode decode to the RGB a viewer shows, and unreadable ones name the file.

Each image is made here with PIL, tiny (20x12 or so), in ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tcjepa.data.decode import BadSample, decode_image, load_rgb


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(load_rgb(path), dtype=np.int32)


def test_output_is_a_square_float_tensor_of_the_centre(tmp_path: Path) -> None:
    # 20 wide x 12 high: left 4 columns red, centre 12 green, right 4 blue -> the centre square is all green.
    a = np.zeros((12, 20, 3), np.uint8)
    a[:, :4, 0] = 255
    a[:, 4:16, 1] = 255
    a[:, 16:, 2] = 255
    path = _save(Image.fromarray(a), tmp_path / "wide.png")
    x = decode_image(path, 8)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    inner = x[:, :, 1:-1]  # the filter reaches a little past the square at its left and right edges
    assert torch.allclose(inner[1], torch.ones(8, 6), atol=0.02) and float(inner[[0, 2]].max()) < 0.02
    # bytes decode exactly as the file does
    assert torch.equal(decode_image(path.read_bytes(), 8), x)


def test_upscales_a_small_image(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (5, 3), (10, 200, 30)), tmp_path / "small.png")
    x = decode_image(path, 16)
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x[:, 8, 8], torch.tensor([10, 200, 30]) / 255, atol=1 / 255)


def test_grayscale_becomes_equal_channels(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 240, 12, dtype=np.uint8), (12, 1))  # 12x20 ramp
    rgb = _rgb(_save(Image.fromarray(grey, "L"), tmp_path / "grey.png"))
    assert rgb.shape == (12, 20, 3)
    assert (rgb[..., 0] == grey).all() and (rgb[..., 1] == grey).all() and (rgb[..., 2] == grey).all()


def test_rgba_and_la_are_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((12, 20, 4), np.uint8)
    rgba[..., 0] = 200  # red-ish
    rgba[:, :10, 3] = 255  # left half opaque
    rgba[:, 10:, 3] = 0  # right half transparent
    out = _rgb(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    assert (out[:, :10] == [200, 0, 0]).all() and (out[:, 10:] == 255).all()
    la = np.stack([np.full((12, 20), 40, np.uint8), np.full((12, 20), 128, np.uint8)], axis=-1)
    out = _rgb(_save(Image.fromarray(la, "LA"), tmp_path / "la.png"))
    want = round(40 * 128 / 255 + 255 * (1 - 128 / 255))  # alpha 128 of grey 40 over white
    assert np.abs(out - want).max() <= 1 and (out[..., 0] == out[..., 2]).all()


def test_palette_and_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (20, 12), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, index 1 blue
    img.paste(1, (10, 0, 20, 12))  # right half blue
    out = _rgb(_save(img, tmp_path / "p.png"))
    assert (out[:, :10] == [255, 0, 0]).all() and (out[:, 10:] == [0, 0, 255]).all()
    out = _rgb(_save(img, tmp_path / "pt.png", transparency=1))  # blue is the transparent index
    assert (out[:, :10] == [255, 0, 0]).all() and (out[:, 10:] == 255).all()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 257 * 10, 32768, 65535]] * 3, dtype=np.uint16)  # -> 0, 10, 128, 255
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    path = _save(img, tmp_path / f"deep{suffix}")
    with Image.open(path) as opened:
        assert opened.mode == "I" or opened.mode.startswith("I;16")
    out = _rgb(path)
    assert (out[0, :, 0] == [0, 10, 128, 255]).all() and (out[..., 0] == out[..., 1]).all()


def test_thirty_two_bit_integer_mode_reads_as_sixteen_bit(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 32768, 65535]] * 2, dtype=np.int32), "I")
    out = _rgb(_save(img, tmp_path / "i32.tif"))
    assert (out[0, :, 0] == [0, 128, 255]).all()


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    img = Image.new("CMYK", (20, 12), (0, 255, 255, 0))  # full magenta + yellow = red
    for name in ("c.jpg", "c.tif"):
        out = _rgb(_save(img, tmp_path / name))
        assert out.shape == (12, 20, 3)
        assert out[..., 0].min() > 230 and out[..., 1:].max() < 25, name


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 20 wide x 12 high, left half red, right half blue, tagged "rotate 90 degrees clockwise to view"
    # (orientation 6): upright it is 12 wide x 20 high with red on top.
    a = np.zeros((12, 20, 3), np.uint8)
    a[:, :10, 0] = 255
    a[:, 10:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.fromarray(a), tmp_path / "sideways.jpg", exif=exif.tobytes(), quality=95)
    upright = _rgb(path)
    assert upright.shape == (20, 12, 3)
    assert upright[:8, :, 0].min() > 200 and upright[:8, :, 2].max() < 60  # top: red
    assert upright[12:, :, 2].min() > 200 and upright[12:, :, 0].max() < 60  # bottom: blue
    x = decode_image(path, 8)  # the centre square of the upright image: red above blue, not left of it
    assert x[0, :3].min() > 0.8 and x[2, -3:].min() > 0.8
    assert x[0, -3:].max() < 0.25 and x[2, :3].max() < 0.25


def test_corrupt_jpeg_names_the_file(tmp_path: Path) -> None:
    good = _save(Image.new("RGB", (20, 12), (1, 2, 3)), tmp_path / "good.jpg")
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(BadSample, match=r"cut\.jpg: cannot decode image \(OSError: "):
        decode_image(bad, 8)
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(BadSample, match=r"noise\.jpg: cannot decode image"):
        decode_image(noise, 8)


def test_empty_and_missing_files_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(BadSample, match=r"empty\.jpg: empty image file \(0 bytes\)$"):
        decode_image(empty, 8)
    with pytest.raises(BadSample, match=r"gone\.jpg: no such image file$"):
        decode_image(tmp_path / "gone.jpg", 8)
    with pytest.raises(BadSample, match=r"^<image bytes>: empty image data"):
        decode_image(b"", 8)
    assert issubclass(BadSample, ValueError)
