"""Exported encoders load without the trainer and compute exactly what the run's EMA encoder computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tcjepa import load_encoder
from tcjepa.app.embed import embed_images, load_image
from tcjepa.app.runs import export_run, load_run_encoder
from tcjepa.models.vit import VisionTransformer, ViTSpec

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


# The normalisation an exported encoder documents and applies to its [0, 1] input: ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def test_export_matches_an_encoder_built_independently(trained_run, tmp_path) -> None:
    """Compare with a ViT built by hand from the config's numbers and loaded with the checkpoint's EMA
    target weights, fed images normalised by hand: nothing here goes through export's own helpers."""
    cfg, run_dir = trained_run
    e = cfg.model.encoder
    assert e.size == "custom"  # the tiny preset spells out its encoder: the spec is the config's own numbers
    spec = ViTSpec(
        image_size=cfg.data.image_size,
        patch_size=e.patch_size,
        embed_dim=e.embed_dim,
        depth=e.depth,
        num_heads=e.num_heads,
        mlp_ratio=e.mlp_ratio or 4.0,
    )
    reference = VisionTransformer(spec)
    state = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)["method"]
    prefix = "target_encoder."
    target = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    reference.load_state_dict(target, strict=True)  # every weight of the EMA target, nothing else
    # The same architecture with the context encoder's weights: exporting that one instead must show.
    context_encoder = VisionTransformer(spec)
    context_encoder.load_state_dict(
        {k[len("context_encoder.") :]: v for k, v in state.items() if k.startswith("context_encoder.")}, strict=True
    )
    for enc in (reference, context_encoder):  # the normalisation is applied by hand below: theirs is switched off
        enc.mean.zero_()
        enc.std.fill_(1.0)
        enc.eval()

    out = export_run(run_dir, tmp_path / "enc")
    config = json.loads((out / "config.json").read_text())
    assert config["image_mean"] == list(IMAGENET_MEAN) and config["image_std"] == list(IMAGENET_STD)
    loaded = load_encoder(out)
    assert not loaded.training

    g = torch.Generator().manual_seed(0)
    size = spec.image_size
    images = torch.cat(
        [torch.rand(3, 3, size, size, generator=g), torch.zeros(1, 3, size, size), torch.ones(1, 3, size, size)]
    )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference((images - mean) / std)
        got = loaded(images)
    assert got.shape == (5, (size // spec.patch_size) ** 2, spec.embed_dim)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert (context_encoder((images - mean) / std) - expected).abs().max() > 1e-3


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


def test_embed_a_captioned_source_with_ids(trained_run, tmp_path) -> None:
    from tcjepa.app.cli import main
    from tests.data.captioned_files import make_folder, names_in

    _, run_dir = trained_run
    out = export_run(run_dir, tmp_path / "enc")
    names = names_in("train", 3) + names_in("val", 2)
    folder = make_folder(tmp_path / "photos", names)
    assert main(["embed", str(out), str(folder), "--out", str(tmp_path / "f.npy"), "--no-progress"]) == 0
    feats = np.load(tmp_path / "f.npy")
    ids = (tmp_path / "f.npy.ids.txt").read_text().splitlines()
    assert sorted(ids) == sorted(names) and feats.shape == (5, load_encoder(out).spec.embed_dim)
    k = ids.index(names[0])  # row k is the image named beside it, decoded as training decodes it
    with torch.no_grad():
        expected = load_encoder(out)(load_image(folder / names[0], 32)[None]).mean(1)[0]
    torch.testing.assert_close(torch.from_numpy(feats[k]), expected)
    data = torch.load(embed_images(out, [str(folder)], tmp_path / "f.pt"), weights_only=True)
    assert data["ids"] == ids
    (folder / names[1]).write_bytes(b"")
    assert main(["embed", str(out), str(folder), "--out", str(tmp_path / "g.npy"), "--no-progress"]) == 2


def test_embed_to_parquet_or_a_clear_error(trained_run, tmp_path) -> None:
    _, run_dir = trained_run
    out = export_run(run_dir, tmp_path / "enc")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        with pytest.raises(ValueError, match="needs pyarrow"):
            embed_images(out, [str(img)], tmp_path / "f.parquet")
        return
    table = pq.read_table(embed_images(out, [str(img)], tmp_path / "f.parquet"))
    assert table.column("id").to_pylist() == [str(img)] and len(table.column("features")[0]) > 0
