"""Config: typos, wrong types and impossible settings fail at start naming the key; the resolved config round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tcjepa.config import Config, ConfigError, all_keys, config_from_dict, load_config, parse_override
from tcjepa.methods import check_config

TINY = "configs/tiny.yaml"


def test_tiny_preset_loads() -> None:
    cfg = load_config(TINY)
    assert cfg.method == "tcjepa" and cfg.data.image_size == 32 and cfg.model.encoder.patch_size == 4
    assert cfg.text.encoder == "hashed" and cfg.model.encoder.size == "custom"
    assert load_config(None) == Config()  # the defaults alone are valid


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [("trian.steps=5", "train.steps"), ("optim.lrr=0.1", "optim.lr"), ("loss.sparse_wieght=1", "loss.sparse_weight")],
)
def test_unknown_key_suggests_the_closest(override: str, suggestion: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"unknown config key '{override.split('=')[0]}'.*Did you mean '{suggestion}'"
    ):
        load_config(TINY, [override])


def test_unknown_key_in_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stpes: 3\n")
    with pytest.raises(ConfigError, match="train.stpes.*train.steps"):
        load_config(path)


@pytest.mark.parametrize("value", ["abc", "1.5", "true", "[1, 2]"])
def test_wrong_type_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"'train\.steps' expects an integer"):
        load_config(TINY, [f"train.steps={value}"])


def test_other_wrong_types() -> None:
    with pytest.raises(ConfigError, match=r"'optim\.lr' expects a number"):
        load_config(TINY, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"'train\.compile' expects true or false"):
        load_config(TINY, ["train.compile=1"])
    with pytest.raises(ConfigError, match=r"'mask\.target_scale' expects a list of 2"):
        load_config(TINY, ["mask.target_scale=0.2"])
    with pytest.raises(ConfigError, match=r"'train' is a section"):
        load_config(TINY, ["train=5"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(TINY, ["train.steps"])


def test_image_size_not_divisible_by_patch_names_both_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(TINY, ["data.image_size=30"])
    assert "data.image_size" in str(err.value) and "model.encoder.patch_size" in str(err.value)


def test_numbers_parse_as_numbers() -> None:
    cfg = load_config(TINY, ["optim.lr=1e-3", "optim.start_lr=2E-4", "train.steps=1e2", "mask.target_scale=[0.1, 0.2]"])
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 0.001
    assert cfg.optim.start_lr == 0.0002
    assert cfg.train.steps == 100 and isinstance(cfg.train.steps, int)
    assert cfg.mask.target_scale == (0.1, 0.2)
    assert isinstance(load_config(TINY, ["optim.lr=1"]).optim.lr, float)
    assert (
        parse_override("run.name=2024") == ("run.name", 2024)
        and load_config(TINY, ["run.name=2024"]).run.name == "2024"
    )
    assert load_config(TINY, ["run.dir="]).run.dir == ""


@pytest.mark.parametrize(
    ("override", "listed"),
    [
        ("train.precision=fp16", "fp32, bf16"),
    ],
)
def test_bad_choice_lists_the_valid_ones(override: str, listed: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"'{key}' must be one of {listed}"):
        load_config(TINY, [override])


def test_method_names_come_from_the_registry() -> None:
    # config sits below the registry, so the method is checked where the registry lives, with the same message.
    cfg = load_config(TINY, ["method=tcjepaa"])
    with pytest.raises(
        ConfigError, match=r"'method' must be one of ijepa, tcjepa, clip, siglip; got 'tcjepaa' \(did you mean 'tcjepa'"
    ):
        check_config(cfg)
    with pytest.raises(ConfigError, match="method=tcjepa needs text.num_captions >= 1"):
        check_config(load_config(TINY, ["text.num_captions=0"]))
    with pytest.raises(ConfigError, match="method=clip needs text.num_captions >= 1"):
        check_config(load_config(TINY, ["method=clip", "text.num_captions=0"]))
    with pytest.raises(ConfigError, match="text_width \\(64\\) must be divisible"):
        check_config(load_config(TINY, ["method=siglip", "model.contrastive.text_heads=3"]))
    check_config(load_config(TINY, ["method=ijepa", "text.num_captions=0"]))
    with pytest.raises(
        ConfigError, match=r"'model.encoder.size' must be one of tiny, .*, custom; got 'bse' \(did you mean 'base'"
    ):
        check_config(load_config(TINY, ["model.encoder.size=bse"]))
    # Choices that live in a registry below the methods (losses) are checked there too, by the method.
    with pytest.raises(
        ConfigError, match=r"'loss.sparse_form' must be one of paper, mean, margin, topk, entropy, none"
    ):
        check_config(load_config(TINY, ["loss.sparse_form=l3"]))
    with pytest.raises(
        ConfigError, match=r"'loss.pred' must be one of smooth_l1, l2; got 'smoth_l1' \(did you mean 'smooth_l1'"
    ):
        check_config(load_config(TINY, ["method=ijepa", "loss.pred=smoth_l1"]))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.steps=0", "train.steps"),
        ("mask.target_scale=[0.5, 0.2]", "mask.target_scale"),
        ("optim.ema=[1.0, 0.9]", "optim.ema"),
        ("text.encoder=clip", "text.encoder"),
        ("model.encoder.num_heads=null", "model.encoder.num_heads"),
        ("optim.lr=-1", "optim.lr"),
    ],
)
def test_impossible_settings_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(TINY, [override])


def test_resolved_config_round_trips_through_yaml() -> None:
    cfg = load_config(TINY, ["optim.lr=3e-4", "mask.context_scale=[0.8, 0.95]", "run.name=x", "loss.sparse_form=topk"])
    text = cfg.to_yaml()
    again = config_from_dict(yaml.safe_load(text))
    assert again == cfg and again.to_yaml() == text
    assert set(_leaves(yaml.safe_load(text))) == set(all_keys())  # every key is written out


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
    return out


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


@pytest.mark.parametrize("name", ["jsonl", "coco"])
def test_file_sources_require_data_path(name: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"config key 'data\.path' is required with data\.name={name}: pass data\.path="
    ):
        load_config(TINY, [f"data.name={name}"])
    with pytest.raises(ConfigError, match=r"'data\.path' is required"):
        load_config(TINY, [f"data.name={name}", "data.path=  "])
    assert load_config(TINY, [f"data.name={name}", "data.path=/some/where"]).data.path == "/some/where"


def test_data_path_without_a_source_that_reads_it_is_refused() -> None:
    # Forgetting data.name=jsonl would otherwise train on generated scenes while the user thinks it read files.
    with pytest.raises(ConfigError, match=r"'data\.path'='f\.jsonl' is set, but data\.name=shapes does not read files"):
        load_config(TINY, ["data.path=f.jsonl"])
    assert load_config(TINY).data.path == ""
