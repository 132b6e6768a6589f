"""``tcjepa embed``: features from an exported encoder (or a run) for image files or a captioned source.

Inputs are either image files, or one source of the real-data formats: a ``.jsonl`` (or a folder holding
``captions.jsonl``) or a COCO captions file, every image of it whatever its split. Images are decoded as
training decodes them (``data/decode.py``: upright RGB, shorter side resized to the encoder's input, centre
square), so features of a training image match what the encoder saw. An unreadable image is an error
that names the file, never a silently missing row.

Outputs, chosen by the extension of ``--out``: ``.pt`` (a dict: ``pooled``, ``ids``, and ``patches`` with
``--patches``), ``.npy`` (the pooled features; the ids one per line in ``<out>.ids.txt`` beside it) or
``.parquet`` (columns ``id`` and ``features``; needs ``pyarrow``). Ids are the file paths as given, or a
source's image paths as written in it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.decode import BadSample, decode_image

OUTPUTS = (".pt", ".npy", ".parquet")


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1], decoded as training decodes; a ValueError naming the file otherwise."""
    try:
        return decode_image(Path(path), size)
    except FileNotFoundError:
        raise ValueError(f"cannot read image {path}: no such file") from None
    except BadSample as e:
        raise ValueError(f"cannot read image {e}") from None


def _encoder(path: str | Path) -> torch.nn.Module:
    from ..export import is_exported_encoder, load_encoder
    from .runs import load_run_encoder

    return load_encoder(path) if is_exported_encoder(path) else load_run_encoder(path)[1].eval()


def source_format(path: Path) -> str | None:
    """``jsonl`` or ``coco`` when ``path`` is a captioned source rather than an image file, else None."""
    if path.is_dir() or path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix == ".json":
        return "coco"
    return None


def resolve_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """(image paths, ids): the files themselves, or every image of one captioned source."""
    if len(inputs) == 1 and (fmt := source_format(Path(inputs[0]))) is not None:
        from ..data.caption_index import read_index

        index = read_index(fmt, inputs[0])
        if index.problems:
            raise ValueError(f"{index.source}: {len(index.problems)} malformed entries, the first: {index.problems[0]}")
        return [index.path(i) for i in range(len(index))], list(index.images)
    sources = [p for p in inputs if source_format(Path(p)) is not None]
    if sources:
        raise ValueError(f"{sources[0]} is a captioned source; give one source alone, or image files only")
    return [Path(p) for p in inputs], list(inputs)


@torch.no_grad()
def embed_images(
    encoder_path: str | Path,
    inputs: list[str],
    out: str | Path,
    patches: bool = False,
    batch_size: int = 64,
    progress: bool = False,
) -> Path:
    out = Path(out)
    if out.suffix not in OUTPUTS:
        raise ValueError(f"--out {out}: the extension must be one of {', '.join(OUTPUTS)}")
    if patches and out.suffix != ".pt":
        raise ValueError("--patches needs a .pt output (.npy and .parquet hold the pooled features)")
    paths, ids = resolve_inputs(inputs)
    if not paths:
        raise ValueError("no images to embed")
    encoder = _encoder(encoder_path)
    size = encoder.spec.image_size
    pooled, patch_feats = [], []
    with tqdm(total=len(paths), desc="embed", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            feats = encoder(torch.stack([load_image(p, size) for p in batch]))
            pooled.append(feats.mean(dim=1))
            if patches:
                patch_feats.append(feats)
            bar.update(len(batch))
    features = torch.cat(pooled)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, features.numpy())
        out.with_name(out.name + ".ids.txt").write_text("".join(f"{i}\n" for i in ids))
    elif out.suffix == ".parquet":
        _write_parquet(out, ids, features.numpy())
    else:
        data = {"pooled": features, "ids": ids}
        if patches:
            data["patches"] = torch.cat(patch_feats)
        torch.save(data, out)
    return out


def _write_parquet(out: Path, ids: list[str], features: np.ndarray) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"--out {out}: writing parquet needs pyarrow (pip install pyarrow); or use .npy/.pt") from None
    dim = features.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1), pa.float32()), dim)
    pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "features": column}), out)
