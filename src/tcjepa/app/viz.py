"""``tcjepa viz``: look inside a run. Patch-word maps per caption word (the paper's Fig. 5), the masks the
predictor sees, and per-patch prediction error on the target blocks, TC-JEPA beside I-JEPA.

Scenes come from the ``test`` split with the evaluation seed, so figures of different runs show the
same images. Maps are the conditioner's patch-word cosines averaged over predictor layers, read with the
whole image as context (see :mod:`tcjepa.eval.grounding`): rectified on one shared scale as in the paper's
Fig. 5, and on request raw, each panel on its own min-max scale. The raw view is what the pointing
game ranks, and the only informative one for a run in the dead zone, whose rectified maps are all zero.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..data.batch import mask_sampler_for
from ..data.captions import build_caption_cache
from ..data.keys import STREAM_MASKS, step_generator
from ..data.sources import scene_dataset
from ..eval.grounding import patch_word_cosines
from ..eval.suite import EVAL_SEED
from ..models.conditioning import TextInputs
from ..models.predictor import gather_targets
from ..train.monitors import shuffled_text
from .runs import load_run_method


def _image(ax, img: torch.Tensor, title: str = "") -> None:
    ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _overlay(ax, img: torch.Tensor, heat: torch.Tensor, title: str, vmax: float | None) -> None:
    """``heat`` (g, g) upsampled to the image and drawn over a dimmed copy of it, on the colour range
    0..vmax, or with ``vmax=None`` on the panel's own min-max range (what an argmax sees)."""
    vmin, vmax = (0.0, vmax) if vmax is not None else (float(heat.min()), float(heat.max()))
    size = img.shape[-1]
    up = F.interpolate(heat[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    ax.imshow(img.permute(1, 2, 0).numpy() * 0.45, interpolation="nearest")
    ax.imshow(up.numpy(), cmap="inferno", alpha=0.75, vmin=vmin, vmax=max(vmax, vmin + 1e-6), interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _view(cos: torch.Tensor, rectified: bool) -> tuple[torch.Tensor, float | None, str]:
    """The maps to draw, their shared upper colour limit (None: each panel its own range) and a title."""
    if not rectified:
        return cos, None, "raw patch-word cosine, what the pointing game ranks (each panel on its own min-max scale)"
    cos = cos.clamp_min(0)
    vmax = float(cos.max())
    return cos, vmax, f"rectified patch-word cosine (shared scale 0-{vmax:.2f})"


def _views(raw: bool) -> tuple[bool, ...]:
    """The ``rectified`` flags to draw: the paper's view always, the raw one on request."""
    return (True, False) if raw else (True,)


@torch.no_grad()
def word_maps(
    run: str | Path, images: list[int], out: Path, captions_per_image: int = 3, raw: bool = False
) -> list[Path]:
    """One PNG per image: a row per caption, a panel per word with its rectified patch-word map; ``raw``
    also writes ``word_maps_<i>_raw.png`` from the same cosines, unrectified."""
    cfg, method = load_run_method(run)
    if not method.grounded:
        raise ValueError(
            f"{run} is a {cfg.method} run (model.predictor.conditioning={cfg.model.predictor.conditioning}) with "
            "no patch-word links to map: word maps need a method with patch-word links (TC-JEPA with the words "
            "conditioner)"
        )
    cache = build_caption_cache(cfg)
    ds = scene_dataset(cfg.data.name, "test", cfg.data.image_size, max(images) + 1, EVAL_SEED)
    grid = cfg.data.image_size // cfg.model.encoder.patch_size
    paths = []
    for i in images:
        item, scene = ds[i], ds.scene(i)
        # Object and relation sentences name things that have a place; prefer them.
        order = sorted(range(len(scene.captions)), key=lambda j: scene.caption_kinds[j] not in ("object", "relation"))
        caps = [scene.captions[j] for j in order[:captions_per_image]]
        text = TextInputs.from_batch(cache.batch([caps], len(caps)))
        cosines = patch_word_cosines(method, item["image"][None], text)[0]  # (P, N, S)
        tokens = [cache.encoder.tokens(c) for c in caps]
        cols = 1 + max(len(t) for t in tokens)
        for rectified in _views(raw):
            cos, vmax, what = _view(cosines, rectified)
            fig = Figure(figsize=(1.35 * cols, 1.55 * len(caps)))
            FigureCanvasAgg(fig)
            for r, (cap, toks) in enumerate(zip(caps, tokens)):
                _image(fig.add_subplot(len(caps), cols, r * cols + 1), item["image"], textwrap.fill(cap, 24))
                for w, tok in enumerate(toks):
                    ax = fig.add_subplot(len(caps), cols, r * cols + 2 + w)
                    _overlay(ax, item["image"], cos[:, r, w].view(grid, grid), tok, vmax)
            fig.suptitle(f"{Path(run).name}, test scene {i}: {what}, mean over predictor layers", fontsize=8)
            paths.append(_save(fig, out / f"word_maps_{i}{'' if rectified else '_raw'}.png"))
    return paths


@torch.no_grad()
def _prediction_errors(method, cfg, batch: dict, text: TextInputs | None) -> torch.Tensor:
    """(B, P) per-patch error |pred - target|^2 / D on target patches (NaN elsewhere)."""
    h = method.targets(batch["images"])
    target = gather_targets(h, batch["mask_targets"])
    pred, _ = method.predict(batch, text)
    err = (pred.float() - target).pow(2).mean(-1)  # (B, M, Kt)
    out = torch.full(h.shape[:2], float("nan"))
    for b in range(h.shape[0]):
        for m in range(err.shape[1]):
            idx = batch["mask_targets"][b, m]
            prev = out[b, idx]
            out[b, idx] = torch.where(prev.isnan(), err[b, m], torch.minimum(prev, err[b, m]))
    return out


@torch.no_grad()
def masks_and_errors(runs: list[str | Path], images: list[int], out: Path) -> Path:
    """Masks of the first run's sampler and each run's per-patch prediction error on the same targets."""
    loaded = [load_run_method(r) for r in runs]
    cfg0 = loaded[0][0]
    ds = scene_dataset(cfg0.data.name, "test", cfg0.data.image_size, max(images) + 1, EVAL_SEED)
    items = [ds[i] for i in images]
    mask_batch = mask_sampler_for(cfg0)(len(items), step_generator(EVAL_SEED, 0, STREAM_MASKS))
    batch = {
        "images": torch.stack([it["image"] for it in items]),
        "mask_context": mask_batch.context,
        "mask_targets": mask_batch.targets,
    }
    if mask_batch.context_valid is not None:  # mask.truncate=pad: padded slots must not be attended to
        batch["mask_context_valid"] = mask_batch.context_valid
    grid = cfg0.data.image_size // cfg0.model.encoder.patch_size
    columns: list[tuple[str, torch.Tensor]] = []
    for run, (cfg, method) in zip(runs, loaded):
        if cfg.data.image_size != cfg0.data.image_size or cfg.model.encoder.patch_size != cfg0.model.encoder.patch_size:
            raise ValueError(f"{run}: image or patch size differs from {runs[0]}; errors need the same patch grid")
        text = None
        if method.text_conditioned:
            cache = build_caption_cache(cfg)
            caps = [list(ds.scene(i).captions[: cfg.text.num_captions]) for i in images]
            text = TextInputs.from_batch(cache.batch(caps, cfg.text.num_captions))
        columns.append((f"{Path(run).name} ({cfg.method})", _prediction_errors(method, cfg, batch, text)))
        if text is not None and len(images) > 1:
            shuffled = TextInputs.from_batch(
                shuffled_text({"text": text.text, "text_mask": text.text_mask, "caption_mask": text.caption_mask})
            )
            columns.append((f"{Path(run).name}, shuffled captions", _prediction_errors(method, cfg, batch, shuffled)))
    vmax = float(np.nanpercentile(torch.stack([c for _, c in columns]).numpy(), 98))
    fig = Figure(figsize=(1.9 * (2 + len(columns)), 1.9 * len(images)))
    FigureCanvasAgg(fig)
    ncols = 2 + len(columns)
    for r, item in enumerate(items):
        _image(fig.add_subplot(len(items), ncols, r * ncols + 1), item["image"], f"test scene {images[r]}")
        ctx = torch.zeros(grid * grid)
        ctx[batch["mask_context"][r]] = 1.0
        for m in range(batch["mask_targets"].shape[1]):
            ctx[batch["mask_targets"][r, m]] = 0.35 + 0.15 * m
        _overlay(
            fig.add_subplot(len(items), ncols, r * ncols + 2),
            item["image"],
            ctx.view(grid, grid),
            "context (bright) / targets",
            1.0,
        )
        for c, (title, err) in enumerate(columns):
            _overlay(
                fig.add_subplot(len(items), ncols, r * ncols + 3 + c),
                item["image"],
                torch.nan_to_num(err[r], nan=0.0).view(grid, grid),
                title,
                vmax,
            )
    fig.suptitle("per-patch prediction error on target blocks (shared colour scale; darker = better)", fontsize=8)
    return _save(fig, out / "masks_and_errors.png")


@torch.no_grad()
def word_map_grid(
    runs: dict[str, str | Path], out: Path, images: tuple[int, ...] = (1, 2), raw_out: Path | None = None
) -> list[Path]:
    """Rows = TC-JEPA runs (e.g. the arms of a sparsity sweep), columns = the words of one relation or object
    caption per image: the same scenes and sentences for every run. ``out`` gets the rectified maps on one
    colour scale; ``raw_out`` (optional) the same cosines unrectified, each panel on its own range, since
    the pointing game only asks where a word's map peaks (runs differ in cosine scale, and a dead-zone run
    is all negative). Runs on another image or patch size than the first are left out (their maps would
    not line up). Returns the files written (none without a TC-JEPA run whose conditioner has word links)."""
    loaded = {label: load_run_method(r) for label, r in runs.items()}
    loaded = {k: v for k, v in loaded.items() if v[1].grounded}
    if not loaded:
        return []
    cfg0 = next(iter(loaded.values()))[0]
    same = (cfg0.data.image_size, cfg0.model.encoder.patch_size)
    loaded = {k: v for k, v in loaded.items() if (v[0].data.image_size, v[0].model.encoder.patch_size) == same}
    ds = scene_dataset(cfg0.data.name, "test", cfg0.data.image_size, max(images) + 1, EVAL_SEED)
    picks = []
    for i in images:
        scene = ds.scene(i)
        j = min(
            range(len(scene.captions)),
            key=lambda j: (scene.caption_kinds[j] != "relation", scene.caption_kinds[j] != "object"),
        )
        picks.append((i, ds[i]["image"], scene.captions[j]))
    cosines, tokens = {}, {}
    for label, (cfg, method) in loaded.items():
        cache = build_caption_cache(cfg)
        grid = cfg.data.image_size // cfg.model.encoder.patch_size
        for i, image, cap in picks:
            text = TextInputs.from_batch(cache.batch([[cap]], 1))
            cosines[(label, i)] = patch_word_cosines(method, image[None], text)[0, :, 0].view(grid, grid, -1)
            tokens[(label, i)] = cache.encoder.tokens(cap)
    # One tensor for every run and image, so that the rectified view shares one scale across the figure.
    keys = list(cosines)
    stacked = torch.cat([cosines[k].flatten() for k in keys])
    sizes = [cosines[k].numel() for k in keys]
    first = next(iter(loaded))
    cols = sum(1 + len(tokens[(first, i)]) for i, _, _ in picks)
    written = []
    for rectified, path in ((True, out), (False, raw_out)):
        if path is None:
            continue
        flat, vmax, what = _view(stacked, rectified)
        maps = {k: m.view_as(cosines[k]) for k, m in zip(keys, flat.split(sizes))}
        fig = Figure(figsize=(1.1 * cols, 1.3 * len(loaded) + 0.4))
        FigureCanvasAgg(fig)
        for r, label in enumerate(loaded):
            c = 0
            for i, image, cap in picks:
                c += 1
                ax = fig.add_subplot(len(loaded), cols, r * cols + c)
                _image(ax, image, textwrap.fill(cap, 22) if r == 0 else "")
                ax.text(-0.1, 0.5, label, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=7)
                for w, tok in enumerate(tokens[(label, i)]):
                    c += 1
                    ax = fig.add_subplot(len(loaded), cols, r * cols + c)
                    _overlay(ax, image, maps[(label, i)][..., w], tok, vmax)
        fig.suptitle(f"{what}, mean over predictor layers", fontsize=8)
        written.append(_save(fig, path))
    return written
