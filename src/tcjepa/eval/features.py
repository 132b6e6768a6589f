"""Frozen-encoder features, extracted once per (encoder, split) and reused by every probe.

Pooled features are the average of the patch features (I-JEPA/TC-JEPA have no [cls]); ``last4``
concatenates the average-pooled outputs of the last four blocks (I-JEPA's transfer protocol,
METHOD.md §5.6). Patch features are kept in fp16 when a probe needs them (dense, attentive).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm


@dataclass
class Features:
    pooled: torch.Tensor  # (n, D) or (n, 4D) with last4
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    patches: torch.Tensor | None = None  # (n, N, D) fp16

    def __len__(self) -> int:
        return self.pooled.shape[0]


def _collate(items: list[dict]) -> dict:
    images = torch.stack([it["image"] for it in items])
    labels: dict[str, torch.Tensor] = {}
    for key in items[0].get("labels", {}):
        values = [it["labels"][key] for it in items]
        stacked = torch.stack([torch.as_tensor(v) for v in values])
        if key.startswith("seg_") or key == "instance":
            stacked = stacked.to(torch.uint8)  # per-pixel maps: small ints, kept compact
        labels[key] = stacked
    return {"images": images, "labels": labels}


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    dataset: Dataset,
    n: int | None = None,
    batch_size: int = 128,
    last4: bool = False,
    keep_patches: bool = False,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "features",
) -> Features:
    if n is not None and n < len(dataset):
        dataset = Subset(dataset, range(n))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate)
    was_training = encoder.training
    encoder.eval()
    pooled, patches, labels = [], [], {}
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            images = batch["images"].to(device)
            if last4:
                layers = encoder.intermediate_layers(images, 4)
                pooled.append(torch.cat([x.mean(dim=1) for x in layers], dim=1).float().cpu())
                last = layers[-1]
            else:
                last = encoder(images)
                pooled.append(last.mean(dim=1).float().cpu())
            if keep_patches:
                patches.append(last.to(torch.float16).cpu())
            for k, v in batch["labels"].items():
                labels.setdefault(k, []).append(v)
    finally:
        encoder.train(was_training)
    return Features(
        pooled=torch.cat(pooled),
        labels={k: torch.cat(v) for k, v in labels.items()},
        patches=torch.cat(patches) if keep_patches else None,
    )


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """A short hash of the weights, so a disk cache never serves features of another encoder."""
    h = hashlib.sha1()
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes()[:4096])
        h.update(str(float(t.float().sum())).encode())
    return h.hexdigest()[:16]


class FeatureCache:
    """Features on disk under ``root``, keyed by encoder fingerprint, split and options."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None
        self.memory: dict[str, Features] = {}

    def get(self, key: str, compute) -> Features:
        if key in self.memory:
            return self.memory[key]
        path = self.root / f"{key}.pt" if self.root else None
        if path is not None and path.is_file():
            try:
                data = torch.load(path, weights_only=True)
                feats = Features(data["pooled"], data["labels"], data.get("patches"))
                self.memory[key] = feats
                return feats
            except Exception:
                path.unlink(missing_ok=True)  # unreadable cache entry: recompute
        feats = compute()
        self.memory[key] = feats
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"pooled": feats.pooled, "labels": feats.labels, "patches": feats.patches}, tmp)
            tmp.replace(path)
        return feats
