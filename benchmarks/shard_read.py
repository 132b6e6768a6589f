"""Samples/s reading WebDataset shards: tcjepa's seek-by-offset reader against iterating webdataset.WebDataset.

    PYTHONPATH=src python benchmarks/shard_read.py   # needs `pip install webdataset`

Writes 400 JPEGs (128x96) into 4 shards in a temporary folder and times, best of 3, raw reads (bytes and
captions) and read + decode to 32 px with tcjepa's decoder for both. Numbers are for comparison within
one process on one machine (docs/design.md §4.12), not absolute claims.
"""

from __future__ import annotations

import io
import os
import tempfile
import time

import numpy as np
import webdataset as wds
from PIL import Image

N, PER = 400, 100


def main() -> None:
    root = tempfile.mkdtemp(prefix="shard-read-")
    os.environ["TCJEPA_SHARD_INDEX_DIR"] = os.path.join(root, "idx")
    from tcjepa.data.decode import decode_image
    from tcjepa.data.shard_paths import parse_shard_path
    from tcjepa.data.shard_writer import ShardFile
    from tcjepa.data.shards import ShardSamples, read_sample

    rng = np.random.default_rng(0)
    for s in range(N // PER):
        f = ShardFile(f"{root}/shard-{s:06d}.tar")
        for k in range(PER):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(buf, format="JPEG")
            f.add(f"{s * PER + k:06d}", buf.getvalue(), "jpg", {"captions": [f"Image {k}. A test."]})
        f.close()
    pattern = f"{root}/shard-{{000000..{N // PER - 1:06d}}}.tar"
    ds = ShardSamples(parse_shard_path(pattern), "train", 32)
    order = ds.epoch_order(0, 0)

    def ours_raw() -> int:
        for r in order:
            k, i = ds.rows[r]
            read_sample(ds.shards[k], int(i))
        return len(order)

    def ours_decoded() -> int:
        for r in order:
            ds[int(r)]
        return len(order)

    def lib_raw() -> int:
        return sum(1 for _ in wds.WebDataset(pattern, shardshuffle=False))

    def lib_decoded() -> int:
        return sum(1 for s in wds.WebDataset(pattern, shardshuffle=False) if decode_image(s["jpg"], 32) is not None)

    for name, fn in [
        ("tcjepa raw (random order)", ours_raw),
        ("webdataset raw (in order)", lib_raw),
        ("tcjepa read+decode 32px", ours_decoded),
        ("webdataset read+decode 32px", lib_decoded),
    ]:
        best = min(_time(fn) for _ in range(3))
        print(f"{name:30s} {N / best:9.0f} samples/s")


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
