from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from progvid.config import (
    DataConfig,
    DataOnlyConfig,
    apply_overrides,
    load_config,
    save_config,
    validate,
)
from progvid.errors import ConfigError


def write(tmp_path: Path, data: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_and_frozen() -> None:
    cfg = DataOnlyConfig()
    assert cfg.data.num_frames == 16
    with pytest.raises(ValidationError):
        cfg.data.num_frames = 8  # type: ignore[misc]


def test_unknown_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, {"data": {"num_frame": 8}})
    with pytest.raises(ConfigError, match=r"unknown key `data.num_frame` \(did you mean `data.num_frames`\?\)"):
        load_config(path)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"dta": {}})
    with pytest.raises(ConfigError, match=r"unknown key `dta` \(did you mean `data`\?\)"):
        load_config(path)


def test_type_and_range_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: `data.num_frames`: .*greater than or equal to 1"):
        load_config(write(tmp_path, {"data": {"num_frames": 0}}))
    with pytest.raises(ConfigError, match=r"`data.flip`"):
        load_config(write(tmp_path, {"data": {"flip": "sideways"}}))
    with pytest.raises(ConfigError, match=r"`data.rrc_scale`|rrc_scale"):
        load_config(write(tmp_path, {"data": {"rrc_scale": [0.9, 0.1]}}))


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, {"data": {"num_frames": 8}})
    cfg = load_config(path, ["data.num_frames=4", "data.flip=false", "data.std=[0.5,0.5,0.5]"])
    assert cfg.data.num_frames == 4 and cfg.data.flip is False and cfg.data.std == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="unknown key `data.lrr`"):
        load_config(path, ["data.lrr=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["data.num_frames"])


def test_override_numbers_and_lists() -> None:
    raw = {"a": {"lr": 1.0}, "stages": [{"b": 1}, {"b": 2}]}
    out = apply_overrides(raw, ["a.lr=3e-4", "stages.1.b=5"])
    assert out["a"]["lr"] == pytest.approx(3e-4)
    assert out["stages"][1]["b"] == 5 and raw["stages"][1]["b"] == 2  # input untouched
    with pytest.raises(ConfigError, match="no item 7"):
        apply_overrides(raw, ["stages.7.b=1"])


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: "):
        load_config(write(tmp_path, "data:\n  num_frames: [1\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="unknown task"):
        load_config(write(tmp_path, {"task": "pretrainn"}))


def test_save_roundtrip(tmp_path: Path) -> None:
    cfg = validate(DataOnlyConfig, {"data": {"num_frames": 4, "flip": False}}, "x")
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg
    assert isinstance(again.data, DataConfig)
