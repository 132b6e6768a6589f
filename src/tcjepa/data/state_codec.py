"""How word states are stored as bytes: fp32, fp16 or int8 with one absmax scale per token.

Shared by the per-sentence disk cache (``captions.py``) and the sharded caption store
(``caption_store.py``), so that a sentence read from either comes back bit-identical to what the cache
computes itself for the same dtype. An entry is its values (row-major) followed, for int8, by one float32
scale per token. An fp16 entry whose values exceed float16's range is written as fp32 instead (never inf);
the entry's code says which.
"""

from __future__ import annotations

import numpy as np
import torch

CODES = {"fp32": 0, "fp16": 1, "int8": 2}
NP_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("i1")}
FP16_MAX = 65504.0


def quantize_int8(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8 quantisation: returns (int8 values, float32 scales); error <= scale / 2."""
    scale = states.float().abs().amax(dim=1) / 127.0 if states.shape[0] else torch.zeros(0)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(states.float() / safe[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantize_int8` (up to the rounding error)."""
    return q.float() * scale[:, None]


def _overflows_fp16(states: torch.Tensor) -> bool:
    return bool(states.numel()) and states.abs().max().item() > FP16_MAX


def to_storage(states: torch.Tensor) -> torch.Tensor:
    """What the memory cache holds: float16 (half the bytes), float32 when a value would overflow to inf."""
    states = states.detach().float()
    return states.clone() if _overflows_fp16(states) else states.half()


def entry_nbytes(code: int, n_tokens: int, dim: int) -> int:
    """Bytes of one entry: values, plus a float32 scale per token for int8."""
    return n_tokens * dim * NP_DTYPES[code].itemsize + (4 * n_tokens if code == 2 else 0)


def pack(states: torch.Tensor, dtype: str) -> tuple[int, bytes]:
    """(code, bytes) of float32 ``states`` (n_tokens, dim) stored as ``dtype``."""
    code = CODES[dtype]
    if code == 1 and _overflows_fp16(states):
        code = 0  # keep out-of-range values exact rather than writing inf
    if code == 2:
        q, scale = quantize_int8(states)
        return code, q.numpy().tobytes() + scale.numpy().astype("<f4").tobytes()
    return code, states.float().numpy().astype(NP_DTYPES[code]).tobytes()


def unpack(buf: bytes | memoryview | np.ndarray, code: int, n_tokens: int, dim: int) -> torch.Tensor:
    """Float32 (n_tokens, dim) states from an entry's bytes (exactly ``entry_nbytes`` long)."""
    if code not in NP_DTYPES:
        raise ValueError(f"unknown dtype code {code}")
    dt, n_vals = NP_DTYPES[code], n_tokens * dim
    vals = np.frombuffer(buf, dtype=dt, count=n_vals).reshape(n_tokens, dim)
    if code == 2:
        scale = np.frombuffer(buf, dtype="<f4", count=n_tokens, offset=n_vals)
        return dequantize_int8(torch.from_numpy(vals.copy()), torch.from_numpy(scale.copy()))
    return torch.from_numpy(vals.astype(np.float32))
