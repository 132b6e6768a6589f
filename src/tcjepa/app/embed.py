"""``tcjepa embed``: features of image files from an exported encoder (or a run), for use elsewhere.

Images are read with PIL, converted to RGB, resized (bilinear, antialiased) to the encoder's square
input and scaled to [0, 1]; the encoder normalises them itself. An unreadable image is an error that
names the file, never a silently missing row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError


def load_image(path: str | Path, size: int) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp(0, 1)


def _encoder(path: str | Path) -> torch.nn.Module:
    from ..export import is_exported_encoder, load_encoder
    from .runs import load_run_encoder

    return load_encoder(path) if is_exported_encoder(path) else load_run_encoder(path)[1].eval()


@torch.no_grad()
def embed_images(
    encoder_path: str | Path, images: list[str], out: str | Path, patches: bool = False, batch_size: int = 64
) -> Path:
    encoder = _encoder(encoder_path)
    size = encoder.spec.image_size
    pooled, patch_feats = [], []
    for start in range(0, len(images), batch_size):
        x = torch.stack([load_image(p, size) for p in images[start : start + batch_size]])
        feats = encoder(x)
        pooled.append(feats.mean(dim=1))
        if patches:
            patch_feats.append(feats)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        if patches:
            raise ValueError("--patches needs a .pt output (a .npy file holds one array: the pooled features)")
        np.save(out, torch.cat(pooled).numpy())
    else:
        data = {"pooled": torch.cat(pooled), "files": list(map(str, images))}
        if patches:
            data["patches"] = torch.cat(patch_feats)
        torch.save(data, out)
    return out
