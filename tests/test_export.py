"""Exported encoders load without the trainer and compute exactly what the run's EMA encoder computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tcjepa import load_encoder
from tcjepa.embed import embed_images, load_image
from tcjepa.export import export_run
from tcjepa.runs import load_run_encoder

pytestmark = pytest.mark.usefixtures("single_thread")


def test_export_round_trip(trained_run, tmp_path) -> None:
    _, run_dir = trained_run
    out = export_run(run_dir, tmp_path / "enc")
    config = json.loads((out / "config.json").read_text())
    assert {"image_size", "patch_size", "embed_dim"} <= set(config) and config["method"] == "tcjepa"
    loaded = load_encoder(out)
    _, original = load_run_encoder(run_dir)
    x = torch.rand(2, 3, config["image_size"], config["image_size"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original.eval()(x), rtol=0, atol=0)
    assert loaded(x).shape == (2, (config["image_size"] // config["patch_size"]) ** 2, config["embed_dim"])


def test_load_encoder_errors(trained_run, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="tcjepa export"):
        load_encoder(tmp_path)
    _, run_dir = trained_run
    out = export_run(run_dir, tmp_path / "enc")
    config = json.loads((out / "config.json").read_text())
    config["embed_dim"] *= 2  # weights no longer match the architecture
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match its config.json"):
        load_encoder(out)


def test_embed_image_files(trained_run, tmp_path) -> None:
    _, run_dir = trained_run
    out = export_run(run_dir, tmp_path / "enc")
    paths = []
    for i, size in enumerate((32, 50)):
        arr = (np.random.default_rng(i).random((size, size, 3)) * 255).astype(np.uint8)
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(arr).save(paths[-1])
    result = embed_images(out, [str(p) for p in paths], tmp_path / "f.pt", patches=True)
    data = torch.load(result, weights_only=True)
    enc = load_encoder(out)
    with torch.no_grad():
        expected = enc(load_image(paths[0], 32)[None]).mean(1)
    torch.testing.assert_close(data["pooled"][:1], expected)
    assert data["patches"].shape[:2] == (2, 64)
    npy = embed_images(out, [str(p) for p in paths], tmp_path / "f.npy")
    assert np.load(npy).shape == (2, enc.spec.embed_dim)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        embed_images(out, [str(tmp_path / "bad.png")], tmp_path / "g.pt")
