"""``tcjepa viz`` writes its figures for a TC-JEPA run beside an I-JEPA run, and refuses what it cannot draw."""

from __future__ import annotations

import pytest
from PIL import Image

from tcjepa.app.cli import main
from tcjepa.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("single_thread")


def test_viz_figures(trained_run, tiny_cfg, tmp_path) -> None:
    _, tc_run = trained_run
    ij_run = pretrain(tiny_cfg("method=ijepa", "train.steps=2", f"run.dir={tmp_path / 'ij'}"), progress=False)
    out = tmp_path / "viz"
    args = ["viz", str(tc_run), "--compare", str(ij_run), "--images", "0", "3", "--raw", "--out", str(out)]
    assert main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "masks_and_errors.png",
        "word_maps_0.png",
        "word_maps_0_raw.png",
        "word_maps_3.png",
        "word_maps_3_raw.png",
    ]
    for p in out.iterdir():
        with Image.open(p) as im:
            assert im.width > 300 and im.height > 150
    # An I-JEPA run alone gets the masks and errors, no word maps.
    assert main(["viz", str(ij_run), "--images", "1", "--out", str(tmp_path / "v2")]) == 0
    assert [p.name for p in (tmp_path / "v2").iterdir()] == ["masks_and_errors.png"]


def test_word_maps_need_a_conditioner(tiny_cfg, tmp_path) -> None:
    from tcjepa.app.viz import word_maps

    ij_run = pretrain(tiny_cfg("method=ijepa", "train.steps=1", f"run.dir={tmp_path / 'ij'}"), progress=False)
    with pytest.raises(ValueError, match="need a method with patch-word links"):
        word_maps(ij_run, [0], tmp_path)


def test_word_maps_need_word_links(tiny_cfg, tmp_path) -> None:
    """A TC-JEPA run whose conditioner exposes no patch-word links has nothing to map."""
    from tcjepa.app.viz import word_map_grid, word_maps

    cfg = tiny_cfg(
        "model.predictor.conditioning=none", "loss.sparse_form=none", "train.steps=1", f"run.dir={tmp_path / 'tc'}"
    )
    run = pretrain(cfg, progress=False)
    with pytest.raises(ValueError, match="no patch-word links"):
        word_maps(run, [0], tmp_path)
    assert word_map_grid({"none": run}, tmp_path / "grid.png") == []
