"""The README's "Train on your own data" recipe, its four commands exactly as written there, on a generated
folder of captioned photos: validate, convert, embed-captions, pretrain (then export, as a user would)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tcjepa.app.cli import main
from tests.data.captioned_files import make_folder, names_in

README = Path(__file__).parents[1] / "README.md"
pytestmark = pytest.mark.usefixtures("single_thread")


def recipe_commands() -> list[str]:
    """The ``tcjepa`` lines of the README's recipe block (the one after the "Train on your own data" heading)."""
    text = README.read_text()
    section = text.split("## Train on your own data", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README: the 'Train on your own data' section has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.startswith("tcjepa ")]


def test_readme_recipe_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TCJEPA_SHARD_INDEX_DIR", str(tmp_path / "index-cache"))
    make_folder(tmp_path / "my-photos", names_in("train", 30) + names_in("val", 3))
    commands = recipe_commands()
    assert [c.split()[1:3] for c in commands] == [
        ["data", "validate"],
        ["data", "convert"],
        ["data", "embed-captions"],
        ["pretrain", "photos-vitb16"],
    ]
    # The recipe names a ViT-B/16 at 224 px; the test shrinks the model and the run, nothing else (the
    # preset's crop and on_error stay).
    small = ["model.encoder.size=custom", "model.encoder.embed_dim=32", "model.encoder.depth=2"]
    small += ["model.encoder.num_heads=2", "model.encoder.patch_size=16", "model.predictor.depth=1"]
    small += ["model.predictor.dim=16", "model.predictor.num_heads=2", "data.image_size=32", "text.encoder=hashed"]
    small += ["train.steps=3", "train.batch_size=8", "train.threads=1", "data.num_workers=0", "train.log_every=1"]
    small += ["train.device=cpu", "train.precision=fp32", "train.compile=false", "train.monitor_every=0"]
    for command in commands:
        argv = shlex.split(command)[1:]
        if argv[0] == "pretrain" or argv[:2] == ["data", "embed-captions"]:
            argv += [a for a in small if a.split("=")[0] not in " ".join(argv)]
        assert main(argv) == 0, command
    run = tmp_path / "runs" / "my-encoder"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[-1].get("text_store_misses_total", 0) == 0  # every caption came from the store
    assert main(["export", str(run), "--out", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "model.safetensors").is_file()
