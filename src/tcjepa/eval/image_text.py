"""Image-text evaluation of methods with a shared image-text space (``contrastive``): retrieval, zero-shot.

Held-out `shapes` test scenes (drawn with the evaluation seed), read through the method's own towers: its
image embedding and its text head over the frozen word states of the run's text encoder.

- **Retrieval**, ``retrieval/{i2t,t2i}/r{1,5,10}``: one caption per scene, its *summary* sentence (the
  one naming the largest objects' colour and shape, e.g. "a red circle and a blue star"; every scene
  has one). Scenes often share a summary, and no model can tell identical sentences apart, so a hit is any
  retrieved item whose sentence is the query's. Chance is the exact hit rate of a random ranking under
  that rule, averaged over queries.
- **Zero-shot**, ``zeroshot/colour`` and ``zeroshot/shape``: colour and shape of the largest object, as
  the class whose prompt embedding is closest. Each class is the normalised mean of its prompts, written
  in the training captions' own templates: "there is something red." plus "the largest shape is a red
  <shape>." over every shape (and "there is a circle." plus "the largest shape is a <colour> circle." over
  every colour). Chance is the share of the most frequent class among the scenes (the best constant answer).

Methods without a text space get none of these keys (not zero): ``eval.md`` prints n/a.
"""

from __future__ import annotations

from math import comb

import torch

from ..data.shapes import ShapesDataset
from ..data.shapes_captions import article
from ..data.shapes_render import COLOURS, SHAPES

RETRIEVAL_KS = (1, 5, 10)
BATCH = 256


def summary_caption(scene) -> str:
    return scene.captions[scene.caption_kinds.index("summary")]


def colour_prompts(colour: str) -> list[str]:
    return [f"there is something {colour}."] + [
        f"the largest shape is {article(colour)} {colour} {shape}." for shape in SHAPES
    ]


def shape_prompts(shape: str) -> list[str]:
    return [f"there is a {shape}."] + [f"the largest shape is {article(c)} {c} {shape}." for c in COLOURS]


@torch.no_grad()
def _embed_sentences(method, cache, sentences: list[str], device) -> torch.Tensor:
    out = []
    for i in range(0, len(sentences), BATCH):
        batch = cache.batch([[s] for s in sentences[i : i + BATCH]], 1)
        out.append(method.embed_texts(batch["text"][:, 0].to(device), batch["text_mask"][:, 0].to(device)).cpu())
    return torch.cat(out)


def recall_at(sims: torch.Tensor, same: torch.Tensor, k: int) -> float:
    """Share of query rows with a matching item (``same``) among their ``k`` most similar columns."""
    top = sims.topk(min(k, sims.shape[1]), dim=1).indices
    return float(same.gather(1, top).any(dim=1).float().mean())


def random_recall_at(matches: torch.Tensor, n: int, k: int) -> float:
    """Expected recall@k of a random ranking of ``n`` items when query i has ``matches[i]`` matching ones."""
    k = min(k, n)
    return sum(1.0 - comb(n - int(m), k) / comb(n, k) for m in matches.tolist()) / len(matches)


def _class_accuracy(img: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    pred = (img @ classes.T).argmax(dim=1)
    chance = float(torch.bincount(labels, minlength=len(classes)).max()) / len(labels)
    return float((pred == labels).float().mean()), chance


@torch.no_grad()
def image_text_metrics(method, cache, image_size: int, n: int, seed: int, device="cpu") -> dict[str, float]:
    """Retrieval and zero-shot metrics (with ``chance/`` twins) on ``n`` `shapes` test scenes."""
    data = ShapesDataset("test", image_size=image_size, seed=seed, size=n)
    was_training = method.training
    method.eval()
    try:
        images, captions, colour, shape = [], [], [], []
        for i in range(len(data)):
            scene = data.scene(i)
            pixels, _ = data.render(scene)
            images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
            captions.append(summary_caption(scene))
            colour.append(COLOURS.index(scene.objects[0].colour))
            shape.append(SHAPES.index(scene.objects[0].shape))
        img = torch.cat(
            [method.embed_images(torch.stack(images[i : i + BATCH]).to(device)).cpu() for i in range(0, n, BATCH)]
        )
        txt = _embed_sentences(method, cache, captions, device)
        groups = {}
        ids = torch.tensor([groups.setdefault(c, len(groups)) for c in captions])
        same = ids[:, None] == ids[None, :]
        sims = img @ txt.T
        metrics: dict[str, float] = {}
        for k in RETRIEVAL_KS:
            chance = random_recall_at(same.sum(dim=1), n, k)
            for direction, s in (("i2t", sims), ("t2i", sims.T)):
                metrics[f"retrieval/{direction}/r{k}"] = recall_at(s, same, k)
                metrics[f"chance/retrieval/{direction}/r{k}"] = chance
        for task, names, prompts, labels in (
            ("colour", COLOURS, colour_prompts, colour),
            ("shape", SHAPES, shape_prompts, shape),
        ):
            classes = torch.stack(
                [
                    torch.nn.functional.normalize(_embed_sentences(method, cache, prompts(c), device).mean(0), dim=0)
                    for c in names
                ]
            )
            acc, chance = _class_accuracy(img, classes, torch.tensor(labels))
            metrics[f"zeroshot/{task}"], metrics[f"chance/zeroshot/{task}"] = acc, chance
        return metrics
    finally:
        method.train(was_training)
