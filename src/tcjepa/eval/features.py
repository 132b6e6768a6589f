"""Frozen-encoder features, extracted once per (encoder, split) and reused by every probe of an evaluation.

Pooled features are the average of the patch features (I-JEPA/TC-JEPA have no [cls]); ``last4``
concatenates the average-pooled outputs of the last four blocks (I-JEPA's transfer protocol,
docs/method.md §7). Patch features are kept in fp16 when a probe needs them (dense, attentive).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
