"""The learning check: gaps to the random-init floor are paired by seed and the verdict needs every seed."""

from __future__ import annotations

from tcjepa.app.floor_check import clearly_learns, floor_gaps, floor_lines, probe_key


def _metrics(colour, count, shape, relation, fashion, split="test"):
    values = dict(
        zip(
            ("scene/colour", "scene/count", "scene/shape", "scene/relation", "fashion/linear"),
            (colour, count, shape, relation, fashion),
        )
    )
    return {probe_key(k, split): v for k, v in values.items()}


def test_gaps_pair_by_seed_id_and_the_verdict_needs_every_seed():
    floor = {0: _metrics(0.3, 0.4, 0.2, 0.3, 0.5), 2: _metrics(0.1, 0.1, 0.1, 0.1, 0.1)}
    arm = {0: _metrics(0.45, 0.55, 0.3, 0.3, 0.5), 2: _metrics(0.2, 0.2, 0.2, 0.1, 0.1)}
    gaps = floor_gaps(arm, floor, "test")
    assert sorted(gaps) == [0, 2]
    assert abs(gaps[0]["scene/colour"] - 0.15) < 1e-9  # seed 0 against floor seed 0, not seed 2
    assert clearly_learns(gaps) is True
    arm[2] = _metrics(0.2, 0.2, 0.15, 0.1, 0.1)  # one seed with only two probes at +10
    assert clearly_learns(floor_gaps(arm, floor, "test")) is False
    assert clearly_learns({}) is None


def test_fashion_val_key_and_markdown():
    assert probe_key("fashion/linear", "test") == "fashion/linear"
    assert probe_key("fashion/linear", "val") == "fashion/linear/val"
    floor = {0: _metrics(0.3, 0.4, 0.2, 0.3, 0.5, "val")}
    arm = {0: _metrics(0.5, 0.6, 0.4, 0.3, 0.5, "val")}
    text = "\n".join(floor_lines({"I-JEPA": arm}, floor, "val"))
    assert "| I-JEPA | 0 | +20.0 | +20.0 | +20.0 | +0.0 | +0.0 | 3/5 |" in text
    assert "I-JEPA: clearly learns" in text
    assert floor_lines({"I-JEPA": arm}, None, "val") == []
