"""Strict config loading: unknown keys and wrong types are rejected with the key's name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pengi.config import Config, ConfigError, flatten, from_dict, load_config, to_dict

REPO = Path(__file__).resolve().parents[1]
PROFILES = [REPO / "params.yaml", *sorted((REPO / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_shipped_profile_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # A shipped profile spells out every key it sets: loading and dumping round-trips it.
    raw = yaml.safe_load(path.read_text())
    assert from_dict(to_dict(cfg)) == cfg
    assert set(raw) <= {f.name for f in dataclasses.fields(Config)}


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown key tranin"):
        from_dict({"tranin": {}})


def test_unknown_nested_key_is_named_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"unknown key model\.htsat\.depth\b"):
        from_dict({"model": {"htsat": {"depth": [1, 1]}}})


@pytest.mark.parametrize(
    "data, where",
    [
        ({"train_pengi": {"lr": "fast"}}, r"train_pengi\.lr: expected a number"),
        ({"train_pengi": {"batch_size": 2.5}}, r"train_pengi\.batch_size: expected an integer"),
        ({"train_pengi": {"batch_size": True}}, r"train_pengi\.batch_size: expected an integer"),
        ({"tracking": {"enabled": "yes"}}, r"tracking\.enabled: expected a boolean"),
        ({"corpus": {"size": "huge"}}, r"corpus\.size: expected one of"),
        ({"model": {"htsat": {"depths": [1, "two"]}}}, r"model\.htsat\.depths\[1\]: expected an integer"),
        ({"data": {"sources": [{"root": "x"}]}}, r"missing required key data\.sources\[0\]\.name"),
        ({"model": "tiny"}, r"model: expected a mapping"),
    ],
)
def test_wrong_types_are_rejected_with_the_key(data: dict, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        from_dict(data)


def test_ints_are_accepted_where_floats_are_expected() -> None:
    cfg = from_dict({"train_pengi": {"lr": 1}})
    assert cfg.train_pengi.lr == 1.0 and isinstance(cfg.train_pengi.lr, float)


def test_config_is_frozen() -> None:
    cfg = from_dict({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train_pengi.lr = 3.0  # type: ignore[misc]


def test_load_config_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("train_pengi:\n  lr: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: train_pengi\.lr"):
        load_config(bad)
    bad.write_text("train_pengi: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_flatten_gives_dotted_scalars() -> None:
    flat = flatten(from_dict({"train_pengi": {"lr": 3e-4}}))
    assert flat["train_pengi.lr"] == 3e-4
    assert flat["model.htsat.depths"] == list(from_dict({}).model.htsat.depths)
    assert all("." in k for k in flat)


def test_named_entries_may_be_a_mapping_keyed_by_name() -> None:
    as_list = from_dict({"data": {"sources": [{"name": "esc50", "root": "r", "role": "eval"}]}})
    as_map = from_dict({"data": {"sources": {"esc50": {"root": "r", "role": "eval"}}}})
    assert as_list == as_map
    with pytest.raises(ConfigError, match=r"data\.sources\.esc50: 'name' is the mapping key"):
        from_dict({"data": {"sources": {"esc50": {"name": "x", "root": "r"}}}})
    with pytest.raises(ConfigError, match=r"unknown key data\.sources\[0\]\.rot"):
        from_dict({"data": {"sources": {"esc50": {"rot": "r"}}}})
