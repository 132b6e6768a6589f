"""Frozen-teacher targets: ``model.target=frozen:PATH`` (docs/design.md §4.16).

The JEPA methods normally predict the features of an EMA copy of their context encoder. With a frozen
teacher they predict the features of an encoder trained earlier, read once from PATH and never updated:

- PATH is a run folder of this project (``config.yaml`` + ``checkpoints/latest.pt``: the encoder that run's
  users get, i.e. its EMA target encoder, or the context encoder of a run that itself had a frozen teacher,
  or a contrastive run's image encoder) or a ``tcjepa export`` folder (``model.safetensors`` +
  ``config.json``). The teacher's architecture is read from that folder's own config, not from this run's.
- Its patch grid must be the student's (same image size, same patch size): the targets are gathered at the
  student's masked positions. Its width may differ: the predictor's output projection is built to the
  teacher's width (the target space), while its input stays the context encoder's.
- It is not a submodule of the method: it is absent from ``state_dict()``, ``parameters()``, the
  optimizer, DDP's broadcast and FSDP's sharding. Checkpoints do not store its weights; they store its
  PATH (in the config) and a SHA-256 of its weights (the :class:`TeacherRecord` extra state), and loading
  a checkpoint with other teacher weights at PATH is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from ..config import Config, ConfigError, config_from_dict
from ..export import CONFIG, WEIGHTS, is_exported_encoder, load_encoder
from ..models.vit import VisionTransformer, vit_spec

EMA, FROZEN = "ema", "frozen:"
RUN_CONFIG, RUN_CHECKPOINT = "config.yaml", Path("checkpoints") / "latest.pt"
# The encoder a run's users get, by the key prefix it has in the run's checkpoint, in order of preference:
# the EMA target encoder; the context encoder of a frozen-teacher run (which has no target encoder); the
# image encoder of a contrastive run.
RUN_ENCODER_PREFIXES = ("target_encoder.", "context_encoder.", "image_encoder.")


def frozen_teacher_path(cfg: Config) -> str | None:
    """PATH of ``model.target=frozen:PATH``, or None for the EMA target."""
    target = cfg.model.target
    return target[len(FROZEN) :] if target.startswith(FROZEN) else None


@dataclass(frozen=True)
class Teacher:
    encoder: VisionTransformer  # frozen, in eval mode, on the CPU
    path: str  # as written in model.target
    weights_file: Path  # the file its weights were read from
    sha256: str  # of its weights (weights_sha256)


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state (names, dtypes, shapes, bytes): changes when any weight changes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _key(path: str) -> str:
    return f"model.target=frozen:{path}"


def _from_export(path: str, folder: Path) -> tuple[VisionTransformer, Path]:
    try:
        return load_encoder(folder), folder / WEIGHTS
    except (ValueError, OSError) as e:
        raise ConfigError(f"{_key(path)}: the exported encoder cannot be read: {e}") from None


def _from_run(path: str, folder: Path) -> tuple[VisionTransformer, Path]:
    try:
        run_cfg = config_from_dict(yaml.safe_load((folder / RUN_CONFIG).read_text()))
    except (ConfigError, OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{_key(path)}: {folder / RUN_CONFIG} is not a readable tcjepa run config: {e}") from None
    e = run_cfg.model.encoder
    spec = vit_spec(e.size, run_cfg.data.image_size, e.patch_size, e.embed_dim, e.depth, e.num_heads, e.mlp_ratio)
    ckpt = folder / RUN_CHECKPOINT
    if not ckpt.is_file():  # a sharded run (latest.dcp) is read by the trainer's layer, not from here
        raise ConfigError(
            f"{_key(path)}: {folder} has sharded checkpoints only (checkpoints/latest.dcp); export its encoder "
            f"first (`tcjepa export {folder} --out DIR`) and point model.target at DIR"
        )
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["method"]
    except Exception as err:  # truncated file, not a checkpoint, pickle refused by weights_only ...
        raise ConfigError(
            f"{_key(path)}: {ckpt} is unreadable ({type(err).__name__}: {str(err)[:200]}); point model.target at "
            "another run or at an exported encoder"
        ) from None
    prefix = next((p for p in RUN_ENCODER_PREFIXES if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        raise ConfigError(
            f"{_key(path)}: {ckpt} holds no image encoder (no key starts with {', '.join(RUN_ENCODER_PREFIXES)}); "
            "point model.target at a JEPA or contrastive run, or at an exported encoder"
        )
    encoder = VisionTransformer(spec)
    try:
        encoder.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    except RuntimeError as err:
        raise ConfigError(
            f"{_key(path)}: the {prefix.rstrip('.')} weights in {ckpt} do not match the architecture in "
            f"{folder / RUN_CONFIG}: {str(err)[:300]}"
        ) from None
    return encoder.eval(), ckpt


def load_teacher(path: str, image_size: int, patch_size: int) -> Teacher:
    """The frozen teacher at ``path`` for a student on ``image_size`` images in ``patch_size`` patches.

    Building it draws no random numbers from the caller's generator: a student gets the same initial
    weights whichever target it trains against.
    """
    folder = Path(path)
    if not folder.exists():
        raise ConfigError(
            f"{_key(path)}: {folder} does not exist. Point it at a run folder ({RUN_CONFIG} + {RUN_CHECKPOINT}) "
            f"or at an exported encoder ({WEIGHTS} + {CONFIG}, written by `tcjepa export RUN --out DIR`)."
        )
    with torch.random.fork_rng(devices=[]):
        if is_exported_encoder(folder):
            encoder, weights = _from_export(path, folder)
        elif (folder / RUN_CONFIG).is_file() and (folder / "checkpoints").is_dir():
            encoder, weights = _from_run(path, folder)
        else:
            raise ConfigError(
                f"{_key(path)}: {folder} is neither a tcjepa run folder ({RUN_CONFIG} + {RUN_CHECKPOINT}) nor an "
                f"exported encoder ({WEIGHTS} + {CONFIG}). Train a run there, or export one with "
                "`tcjepa export RUN --out DIR`."
            )
    spec = encoder.spec
    if (spec.image_size, spec.patch_size) != (image_size, patch_size):
        raise ConfigError(
            f"{_key(path)}: the teacher in {weights} sees {spec.image_size}px images in {spec.patch_size}px "
            f"patches (a {spec.grid}x{spec.grid} grid), this run data.image_size={image_size} with "
            f"model.encoder.patch_size={patch_size} (a {image_size // patch_size}x{image_size // patch_size} "
            "grid); the targets must lie on the student's patch grid. Set data.image_size and "
            "model.encoder.patch_size to the teacher's, or choose a teacher of this geometry."
        )
    encoder.requires_grad_(False).eval()
    return Teacher(encoder, path, weights, weights_sha256(encoder))


class TeacherRecord(nn.Module):
    """No weights: the teacher's PATH and weight hash, carried in the method's state dict (extra state).

    A checkpoint thus names the teacher it was trained against, and loading it into a method whose teacher
    weights hash otherwise (the file at PATH was replaced or retrained since) raises instead of continuing
    against other targets.
    """

    def __init__(self, teacher: Teacher):
        super().__init__()
        self.path, self.sha256, self.weights_file = teacher.path, teacher.sha256, teacher.weights_file

    def get_extra_state(self) -> dict:
        return {"path": self.path, "sha256": self.sha256}

    def set_extra_state(self, state: dict) -> None:
        saved = state.get("sha256") if isinstance(state, dict) else None
        if saved != self.sha256:
            raise ConfigError(
                f"{_key(self.path)}: the teacher weights in {self.weights_file} (sha256 {self.sha256[:16]}...) are "
                f"not the ones this checkpoint was trained against (sha256 {str(saved)[:16]}...); the file changed "
                "since. Restore the original teacher, or start a new run against this one."
            )
