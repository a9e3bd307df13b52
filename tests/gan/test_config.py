"""The config loader: defaults <- YAML <- --set, type-checked, unknown keys rejected."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from gan.config import ConfigError, dump_config, from_dict, load_config, save_config, to_dict


@dataclasses.dataclass(frozen=True)
class Opt:
    lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)


@dataclasses.dataclass(frozen=True)
class Net:
    channels: int = 32
    act: Literal["lrelu", "relu"] = "lrelu"
    fp16: bool = False


@dataclasses.dataclass(frozen=True)
class Run:
    batch: int = 8
    kimg: float = 10.0
    desc: str = "demo"
    metrics: tuple[str, ...] = ()
    resume: Optional[str] = None
    net: Net = Net()
    opt: Opt = Opt()

    def __post_init__(self) -> None:
        if self.batch <= 0:
            raise ValueError(f"batch must be positive, got {self.batch}")


def test_defaults_without_file_or_overrides():
    assert load_config(Run) == Run()


def test_yaml_overrides_defaults_and_set_overrides_yaml(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("batch: 16\nnet:\n  channels: 64\nopt:\n  betas: [0, 0.9]\n")
    cfg = load_config(Run, path, ["net.channels=128", "desc=run one", "metrics=[fid10k, kid10k]"])
    assert cfg.batch == 16
    assert cfg.net.channels == 128
    assert cfg.desc == "run one"
    assert cfg.metrics == ("fid10k", "kid10k")
    # Lists become tuples of floats: Adam on torch 2.14 rejects list betas with ints.
    assert cfg.opt.betas == (0.0, 0.9) and all(type(b) is float for b in cfg.opt.betas)
    assert cfg.net.act == "lrelu" and cfg.resume is None


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(Run, overrides=["kimg=3"]).kimg == 3.0
    # YAML 1.1 reads 1e-4 (no dot) as a string; it is still a float to us.
    assert load_config(Run, overrides=["opt.lr=1e-4"]).opt.lr == 1e-4
    with pytest.raises(ConfigError, match="expected float"):
        load_config(Run, overrides=["opt.lr=fast"])
    with pytest.raises(ConfigError, match=r"'batch': expected int, got 1\.5"):
        load_config(Run, overrides=["batch=1.5"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("bacth=4", r"unknown key 'bacth' at top level; valid keys are: batch, kimg"),
        ("net.chanels=4", r"unknown key 'chanels' at net"),
        ("net.act=gelu", r"'net\.act': expected one of 'lrelu', 'relu', got 'gelu'"),
        ("net.fp16=1", r"'net\.fp16': expected bool, got 1"),
        ("batch=many", r"'batch': expected int, got 'many'"),
        ("batch", r"expected key=value"),
        ("batch.x=1", r"'batch' is a value, not a group"),
        ("opt.betas=[0.1]", r"expected 2 items"),
        ("batch=0", r"batch must be positive"),
    ],
)
def test_bad_overrides_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, overrides=[override])


def test_unknown_key_in_yaml_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("net:\n  chanels: 4\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'net\.chanels'.*typo\.yaml"):
        load_config(Run, path)


def test_missing_or_malformed_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Run, listy)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(Run, overrides=["net.channels=7", "metrics=[fid50k_full]", "resume=latest"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(Run, path) == cfg
    assert yaml.safe_load(path.read_text())["net"] == {"channels": 7, "act": "lrelu", "fp16": False}
    assert not list(path.parent.glob(".config.yaml.tmp-*")), "no temporary files left behind"


def test_to_dict_is_plain_data():
    d = to_dict(Run())
    assert d["opt"]["betas"] == [0.0, 0.99]
    assert from_dict(Run, d) == Run()
    assert "batch: 8" in dump_config(Run())


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Run().batch = 3  # type: ignore[misc]


def test_presets_resolve_by_name_and_every_preset_is_installed_as_data_files():
    import configparser

    from gan.config import ConfigError, find_preset

    repo = Path(__file__).resolve().parents[2]
    assert find_preset("gan", "mtf64") == repo / "configs" / "gan" / "mtf64.yaml"
    assert find_preset("classify", "demo.yaml") == repo / "configs" / "classify" / "demo.yaml"
    with pytest.raises(ConfigError, match="mtf128.*mtf256|demo"):
        find_preset("gan", "mtf999")
    with pytest.raises(ConfigError, match="does not exist"):
        find_preset("gan", "some/dir/missing.yaml")
    # a non-editable install has no checkout: setup.cfg must ship every preset
    cfg = configparser.ConfigParser()
    cfg.read(repo / "setup.cfg")
    shipped = {f.strip() for v in cfg["options.data_files"].values() for f in v.replace("\n", ",").split(",") if f.strip()}
    on_disk = {str(p.relative_to(repo)) for p in (repo / "configs").rglob("*.yaml")}
    assert shipped == on_disk


def test_typed_values_sit_between_the_file_and_set_strings_and_are_type_checked(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("batch: 16\nnet:\n  channels: 64\n")
    cfg = load_config(Run, path, ["batch=4"], values={"batch": 32, "net.channels": 96, "desc": "a: b"})
    assert cfg.batch == 4  # --set wins over a flag
    assert cfg.net.channels == 96 and cfg.desc == "a: b"  # a value is never re-parsed as YAML
    with pytest.raises(ConfigError, match="unknown key 'chanels'"):
        load_config(Run, None, values={"net.chanels": 3})
    with pytest.raises(ConfigError, match="net.channels"):
        load_config(Run, None, values={"net.channels": "many"})
    from gan.config import override_keys

    assert override_keys(["net.channels=3", "batch = 2"]) == ["net.channels", "batch"]
