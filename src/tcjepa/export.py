"""Encoders out of runs: ``model.safetensors`` + ``config.json``, loadable without the trainer.

An exported encoder is the encoder a run's users get: for JEPA runs the EMA target encoder, or the context
encoder when the run trained against a frozen teacher (``model.target=frozen:PATH``; then ``config.json``
says ``"encoder": "context"`` and names the teacher). It takes float images
in [0, 1], shape (B, 3, H, W), applies its own normalisation and returns patch features (B, N, D).
``config.json`` records the architecture (``image_size``, ``patch_size``, ``embed_dim``, ``depth``,
``num_heads``, ``mlp_ratio``), the normalisation, and where the weights came from.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .models.vit import IMAGE_MEAN, IMAGE_STD, VisionTransformer, ViTSpec

WEIGHTS, CONFIG = "model.safetensors", "config.json"
EXPORT_FORMAT = 1


def export_encoder(encoder: VisionTransformer, out: str | Path, meta: dict | None = None) -> Path:
    """Write ``encoder`` to ``out/`` (created if needed; an earlier export there is replaced)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "tcjepa-encoder", "version": str(EXPORT_FORMAT)})
    config = {
        "format": "tcjepa-encoder",
        "version": EXPORT_FORMAT,
        **asdict(encoder.spec),
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
        "input": "float images in [0, 1], (B, 3, image_size, image_size); the encoder normalises them itself",
        "output": "patch features (B, (image_size / patch_size)^2, embed_dim) after the final LayerNorm",
        **(meta or {}),
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out


def is_exported_encoder(path: str | Path) -> bool:
    path = Path(path)
    return (path / WEIGHTS).is_file() and (path / CONFIG).is_file()


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> VisionTransformer:
    """The encoder exported to ``path`` (a folder with model.safetensors and config.json), in eval mode."""
    path = Path(path)
    if not is_exported_encoder(path):
        raise FileNotFoundError(
            f"{path} is not an exported tcjepa encoder: expected {path / WEIGHTS} and {path / CONFIG}. "
            "Create one with `tcjepa export RUN --out DIR`."
        )
    config = json.loads((path / CONFIG).read_text())
    fields = ("image_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
    missing = [f for f in fields if f not in config]
    if missing:
        raise ValueError(f"{path / CONFIG} lacks {', '.join(missing)}; it was not written by `tcjepa export`")
    encoder = VisionTransformer(ViTSpec(**{f: config[f] for f in fields}))
    state = load_file(str(path / WEIGHTS), device=str(map_location))
    try:
        result = encoder.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path / WEIGHTS} does not match its config.json: {str(e)[:300]}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path / WEIGHTS} does not match its config.json: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return encoder.eval()
