"""``tcjepa eval``: one frozen-encoder suite for every method, written to ``eval.json`` and ``eval.md``.

Features come from the encoder downstream users get (for JEPA runs the EMA target encoder; ``tcjepa eval
--encoder context`` reads the context encoder instead and writes ``eval_context.*``), average-
pooled patch features (or the last four blocks' pools with ``last4``), extracted once per split and
shared by every probe. Evaluation data never depends on the run: scenes are drawn with
``EVAL_SEED`` whatever seed the run trained with, so all runs of a comparison answer the same questions.

Metric names are flat and stable (``report.json`` and plots key on them):
``scene/<task>/<set>`` linear probes, ``knn/<task>/k<k>``, ``attentive/<task>/<set>``,
``dense/<target>/miou``, ``fashion/linear`` (test) and ``fashion/linear/val``, ``fashion/knn/k<k>``,
``fscene/<task>/<set>`` and ``dense/garment/miou`` on `fashion-scenes` (Fashion-MNIST items on a canvas, 2-4
per scene; ``heldout`` scenes pair classes never seen together), ``health/<stat>``, ``grounding/pointing``
(TC-JEPA runs; on the scenes the run trained on), ``retrieval/{i2t,t2i}/r<k>`` and ``zeroshot/{colour,shape}``
(methods with an image-text space, ``eval/image_text.py``; absent for the others), each ``<name>`` with a
``chance/<name>`` where
chance is defined. ``<set>`` is ``val``, ``test`` or ``heldout``; tune on ``val`` only (it is the accuracy
of the head the probe picked on val, so slightly optimistic), and read ``test``/``heldout`` once.
``data/heldout_largest_share`` is the share of heldout scenes whose largest object is the held-out pair
(what ``scene/shape_heldout/heldout`` is scored on; the other largest-object tasks use every heldout scene).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data.fashion import CLASS_NAMES, INSTALL_HINT, FashionMNIST, fashion_available
from ..data.fashion_scenes import FashionScenes
from ..data.shapes import ShapesDataset
from ..data.sources import scene_dataset
from .attentive import attentive_probe
from .dense import DENSE_TARGETS, FSCENE_DENSE_TARGETS, dense_probe
from .features import Features, extract_features
from .health import representation_health
from .knn import knn_probe
from .linear import linear_probe
from .markdown import eval_markdown
from .scene import FSCENE_TASKS, SCENE_TASKS, majority_chance, scene_probes

log = logging.getLogger("tcjepa.eval")

EVAL_SEED = 0
FSCENE_MIN_ITEMS = 2  # fashion-scenes are evaluated as the shipped fashion presets train: 2-4 items


@dataclass(frozen=True)
class Suite:
    name: str
    shapes: dict[str, int]  # images per split: train, val, test, heldout
    fashion: dict[str, int]  # train, val, test; empty = skip
    fashion_scenes: dict[str, int] = field(default_factory=dict)  # train, val, test, heldout; empty = skip
    knn_ks: tuple[int, ...] = (10, 20, 100, 200)
    attentive_tasks: tuple[str, ...] = ()
    attentive_epochs: int = 20
    dense: bool = True
    grounding_images: int = 128
    tasks: tuple[str, ...] = tuple(SCENE_TASKS)


SUITES = {
    "quick": Suite(
        "quick",
        shapes={"train": 2000, "val": 500, "test": 1000, "heldout": 1000},
        fashion={"train": 2000, "val": 500, "test": 1000},
        fashion_scenes={"train": 2000, "val": 500, "test": 1000, "heldout": 1000},
    ),
    # The quick suite plus attentive probes on the patch tokens (the I-JEPA family's frozen evaluation):
    # does an encoder hold shape, count or relations that average pooling hides from a linear probe?
    "attentive": Suite(
        "attentive",
        shapes={"train": 2000, "val": 500, "test": 1000, "heldout": 1000},
        fashion={"train": 2000, "val": 500, "test": 1000},
        fashion_scenes={"train": 2000, "val": 500, "test": 1000, "heldout": 1000},
        attentive_tasks=("colour", "shape", "count", "relation"),
    ),
    "full": Suite(
        "full",
        shapes={"train": 10000, "val": 2000, "test": 5000, "heldout": 5000},
        fashion={"train": 10000, "val": 2000, "test": 10000},
        fashion_scenes={"train": 10000, "val": 2000, "test": 5000, "heldout": 5000},
        attentive_tasks=("shape", "count", "colour_2nd", "relation"),
        grounding_images=512,
    ),
}


@dataclass
class EvalTarget:
    """What to evaluate: an encoder, plus the whole method and its caption cache when it came from a run."""

    encoder: torch.nn.Module
    image_size: int
    name: str
    method: torch.nn.Module | None = None
    cache: object | None = None  # CaptionCache for grounding
    # Copied into the settings of eval.json; runs add "encoder" ("target"/"context") and "ema_init_share".
    info: dict = field(default_factory=dict)


def _features(target: EvalTarget, dataset, last4: bool, patches: bool, device, progress: bool, desc: str):
    return extract_features(
        target.encoder,
        dataset,
        last4=last4,
        keep_patches=patches,
        device=device,
        progress=progress,
        desc=f"{target.name} {desc}",
    )


def evaluate(
    target: EvalTarget, suite: Suite, last4: bool = False, device: str | torch.device = "cpu", progress: bool = True
) -> dict[str, float]:
    """Every probe of ``suite`` on ``target``; returns the flat metric dict."""
    metrics: dict[str, float] = {}
    need_patches = suite.dense or bool(suite.attentive_tasks)
    shapes = {
        s: ShapesDataset(s, image_size=target.image_size, seed=EVAL_SEED, size=n) for s, n in suite.shapes.items()
    }
    feats: dict[str, Features] = {
        s: _features(target, ds, last4, need_patches, device, progress, f"shapes/{s}") for s, ds in shapes.items()
    }
    tests = {s: feats[s] for s in ("test", "heldout")}
    # Val numbers are kept (scene/<task>/val): hyper-parameters are tuned on them, never on test.
    for key, acc in scene_probes(feats["train"], feats["val"], tests, suite.tasks, seed=EVAL_SEED).items():
        kind, task, split = key.split("/")
        metrics[f"scene/{task}/{split}" if kind == "probe" else f"chance/scene/{task}/{split}"] = acc
    if "heldout_slot" in feats["heldout"].labels:
        metrics["data/heldout_largest_share"] = float((feats["heldout"].labels["heldout_slot"] == 0).float().mean())
    for name in suite.tasks:
        task = SCENE_TASKS[name]
        y_train = task.label(feats["train"].labels)
        y_test = task.label(feats["test"].labels)
        res = knn_probe(
            feats["train"].pooled, y_train, {"test": (feats["test"].pooled, y_test)}, task.num_classes, ks=suite.knn_ks
        )
        for k, accs in res.items():
            metrics[f"knn/{name}/k{k}"] = accs["test"]
            metrics[f"chance/knn/{name}/k{k}"] = majority_chance(y_train, y_test)
    for name in suite.attentive_tasks:
        task = SCENE_TASKS[name]
        res = attentive_probe(
            feats["train"].patches,
            task.label(feats["train"].labels),
            feats["val"].patches,
            task.label(feats["val"].labels),
            {s: (feats[s].patches, task.label(feats[s].labels)) for s in ("test", "heldout")},
            task.num_classes,
            epochs=suite.attentive_epochs,
            seed=EVAL_SEED,
            device=device,
        )
        for split, acc in {"val": res.val_acc, **res.test_acc}.items():
            metrics[f"attentive/{name}/{split}"] = acc
            metrics[f"chance/attentive/{name}/{split}"] = metrics[f"chance/scene/{name}/{split}"]
    if suite.dense:
        metrics.update(_dense_probes(feats, DENSE_TARGETS))
    metrics.update(
        {f"health/{k}": v for k, v in representation_health(feats["test"].pooled, feats["test"].patches).items()}
    )
    metrics.update(_fashion(target, suite, last4, device, progress))
    metrics.update(_fashion_scenes(target, suite, last4, device, progress))
    if target.method is not None and target.cache is not None and target.method.grounded:
        from .grounding import evaluate_grounding

        # Words are pointed at in scenes like the ones the run was trained on: its captions' vocabulary.
        data = target.info.get("data", "shapes")
        scenes = scene_dataset(data, "test", target.image_size, suite.grounding_images, EVAL_SEED, FSCENE_MIN_ITEMS)
        res = evaluate_grounding(target.method, scenes, target.cache, n=suite.grounding_images, device=device)
        metrics.update(res.as_metrics())
        metrics["chance/grounding/pointing"] = metrics.pop("grounding/pointing_chance")
        for kind in res.by_kind:
            metrics[f"chance/grounding/pointing_{kind}"] = metrics.pop(f"grounding/pointing_{kind}_chance")
        # The same game read on caption-centred similarities, whatever the run trained with: comparable
        # across regulariser forms, since the softmax only ever sees a word relative to the caption's average.
        centred = evaluate_grounding(
            target.method, scenes, target.cache, n=suite.grounding_images, device=device, centred=True
        )
        metrics["grounding/pointing_centred"] = centred.accuracy
        metrics["chance/grounding/pointing_centred"] = centred.chance
    if has_text_space(target):
        from .image_text import image_text_metrics

        n = suite.shapes["test"]
        metrics.update(image_text_metrics(target.method, target.cache, target.image_size, n, EVAL_SEED, device))
    return metrics


def has_text_space(target: EvalTarget) -> bool:
    """A run of a contrastive method, with its caption cache: retrieval and zero-shot apply."""
    return target.method is not None and target.cache is not None and bool(target.method.contrastive)


NO_TEXT_SPACE = "not applicable: the encoder has no text space (retrieval and zero-shot are absent, not zero)"


def _dense_probes(feats: dict[str, Features], targets: dict[str, tuple[str, int]]) -> dict[str, float]:
    """``dense/<name>/miou`` (test, head chosen on val), its background-only floor, and pixel accuracy."""
    metrics: dict[str, float] = {}
    grid = int(math.isqrt(feats["train"].patches.shape[1]))
    for name, (key, classes) in targets.items():
        res = dense_probe(
            feats["train"].patches,
            feats["train"].labels[key],
            feats["val"].patches,
            feats["val"].labels[key],
            {"test": (feats["test"].patches, feats["test"].labels[key])},
            classes,
            grid,
            seed=EVAL_SEED,
        )
        metrics[f"dense/{name}/miou"] = res.miou["test"]
        metrics[f"chance/dense/{name}/miou"] = background_miou(feats["test"].labels[key], classes)
        metrics[f"dense/{name}/pixel_acc"] = res.pixel_acc["test"]
    return metrics


def _fashion_scenes(target: EvalTarget, suite: Suite, last4: bool, device, progress: bool) -> dict[str, float]:
    """Scene and dense probes on `fashion-scenes` (``fscene/<task>/<set>``, ``dense/garment/miou``)."""
    if not suite.fashion_scenes:
        return {}
    if not fashion_available():
        log.warning("fashion-scenes probes skipped: %s", INSTALL_HINT)
        return {}
    feats = {
        s: _features(
            target,
            FashionScenes(s, image_size=target.image_size, seed=EVAL_SEED, size=n, min_objects=FSCENE_MIN_ITEMS),
            last4,
            suite.dense,
            device,
            progress,
            f"fashion-scenes/{s}",
        )
        for s, n in suite.fashion_scenes.items()
    }
    tests = {s: feats[s] for s in ("test", "heldout")}
    metrics: dict[str, float] = {}
    probes = scene_probes(feats["train"], feats["val"], tests, tuple(FSCENE_TASKS), seed=EVAL_SEED, table=FSCENE_TASKS)
    for key, acc in probes.items():
        kind, task, split = key.split("/")
        metrics[f"fscene/{task}/{split}" if kind == "probe" else f"chance/fscene/{task}/{split}"] = acc
    if suite.dense:
        metrics.update(_dense_probes(feats, FSCENE_DENSE_TARGETS))
    return metrics


def background_miou(maps: torch.Tensor, num_classes: int) -> float:
    """mIoU of answering "background" (class 0) at every pixel: the floor of the dense probe."""
    from .dense import confusion_matrix, miou_from_confusion

    return miou_from_confusion(confusion_matrix(maps, torch.zeros_like(maps), num_classes))[0]


def _fashion(target: EvalTarget, suite: Suite, last4: bool, device, progress: bool) -> dict[str, float]:
    if not suite.fashion:
        return {}
    if not fashion_available():
        log.warning("Fashion-MNIST probe skipped: %s", INSTALL_HINT)
        return {}
    feats = {
        s: _features(
            target,
            FashionMNIST(s, image_size=target.image_size, size=n, seed=EVAL_SEED),
            last4,
            False,
            device,
            progress,
            f"fashion/{s}",
        )
        for s, n in suite.fashion.items()
    }
    y = {s: f.labels["class"] for s, f in feats.items()}
    res = linear_probe(
        feats["train"].pooled,
        y["train"],
        feats["val"].pooled,
        y["val"],
        {"test": (feats["test"].pooled, y["test"])},
        len(CLASS_NAMES),
        seed=EVAL_SEED,
    )
    out = {
        "fashion/linear": res.test_acc["test"],
        "chance/fashion/linear": majority_chance(y["train"], y["test"]),
        "fashion/linear/val": res.val_acc,
        "chance/fashion/linear/val": majority_chance(y["train"], y["val"]),
    }
    for k, accs in knn_probe(
        feats["train"].pooled,
        y["train"],
        {"test": (feats["test"].pooled, y["test"])},
        len(CLASS_NAMES),
        ks=suite.knn_ks,
    ).items():
        out[f"fashion/knn/k{k}"] = accs["test"]
        out[f"chance/fashion/knn/k{k}"] = out["chance/fashion/linear"]
    return out


def settings(target: EvalTarget, suite: Suite, last4: bool, seconds: float) -> dict:
    return {
        "target": target.name,
        "suite": asdict(suite),
        "features": "last4" if last4 else "average-pooled last layer",
        "eval_seed": EVAL_SEED,
        "image_size": target.image_size,
        "seconds": round(seconds, 1),
        "machine": f"{platform.machine()} x{torch.get_num_threads()} threads, torch {torch.__version__}",
        "image_text": "shapes test scenes, summary caption, own text tower"
        if has_text_space(target)
        else NO_TEXT_SPACE,
        **target.info,
    }


def run_eval(
    target: EvalTarget,
    suite: str | Suite = "quick",
    out: str | Path | None = None,
    last4: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    stem: str = "eval",
) -> dict:
    """Evaluate and, with ``out``, write ``out/<stem>.json`` and ``out/<stem>.md``; returns the JSON object."""
    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
        suite = SUITES[suite]
    t0 = time.perf_counter()
    metrics = evaluate(target, suite, last4, device, progress)
    result = {"metrics": metrics, "settings": settings(target, suite, last4, time.perf_counter() - t0)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{stem}.md").write_text(eval_markdown(result))
    return result
