"""Frozen dataclass configs, YAML presets and ``--set a.b=value`` overrides.

Every run of ``mtf-gan`` or ``mtf-classify`` is described by one frozen dataclass
(composed of smaller ones, one per concern). Defaults live in the dataclass, a YAML
preset under ``configs/`` overrides some of them, and ``--set key=value`` flags
override the preset. Unknown keys and values of the wrong type are errors that name
the key and the accepted keys or type: a typo must never silently fall back to a
default (a pain point of stringly typed ``**kwargs`` configs).

The resolved config is written as ``config.yaml`` in every run folder, and
``load_config(cls, that_file)`` reads it back unchanged.

``classify`` reuses this module (it may import from ``gan``; never the other way).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "apply_values",
    "override_keys",
    "load_config",
    "save_config",
    "dump_config",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to fix."""


# ----------------------------------------------------------------------------
# Type checking and coercion of single values.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        inner = _type_name(args[0]) if args else "any"
        return f"list of {inner}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to the annotated type ``tp``, or raise ConfigError.

    Only lossless conversions are made: an int where a float is expected, a list where
    a tuple is expected, and a float written as ``1e-4`` (which YAML 1.1 leaves a string)
    where a float is expected. Other strings are never parsed into numbers: YAML (and the
    ``--set`` parser, which uses YAML) already did that.
    """
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is Literal:
        for allowed in typing.get_args(tp):
            if value == allowed and type(value) is type(allowed):  # True must not match 1
                return value
        raise bad
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} items, got {value!r}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            inner = args[0] if args else Any
            items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; users type exactly that.
            try:
                return float(value)
            except ValueError:
                pass
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    raise ConfigError(f"config key '{key}': unsupported annotation {tp!r} (a bug in the config class)")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


# ----------------------------------------------------------------------------
# Dataclass <-> dict.


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) nested dict.

    Missing keys take the dataclass defaults; unknown keys raise ConfigError listing
    the valid ones; every value is type-checked against the annotation.
    """
    data = dict(data or {})
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        where = f" in '{prefix[:-1]}'" if prefix else ""
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(f"'{prefix}{k}'" for k in unknown)
            + f"{where}; valid keys are: {', '.join(types_)}"
        )
    kwargs = {k: _coerce(v, types_[k], prefix + k) for k, v in data.items()}
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError("missing required config key(s): " + ", ".join(prefix + k for k in missing))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ validation
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid config{(' ' + prefix[:-1]) if prefix else ''}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) suitable for YAML, JSON and checkpoints."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


# ----------------------------------------------------------------------------
# Overrides, files.


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set '{item}': expected key=value, e.g. --set train.batch=16")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set '{item}': empty key; expected key=value, e.g. --set train.batch=16")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw  # an unparsable value is taken as a plain string and type-checked later
    return key.split("."), value


def apply_overrides(cls: type, data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a nested dict, checking keys against ``cls``.

    Values are parsed as YAML scalars/lists (``16`` is an int, ``0.5`` a float,
    ``[1,2]`` a list, ``null`` None) and type-checked when the dataclass is built.
    """
    parsed = [_parse_override(item) for item in overrides]
    return apply_values(cls, data, {tuple(path): value for path, value in parsed})


def apply_values(cls: type, data: dict[str, Any], values: dict[str, Any] | dict[tuple[str, ...], Any]
                 ) -> dict[str, Any]:
    """Set dotted keys (``{"train.batch": 16}``) to typed values in a nested dict, checking the
    keys against ``cls`` like ``--set`` does; the values are type-checked when the dataclass
    is built. This is how CLI flags reach a config: as the values click parsed, never
    written out as strings and parsed back."""
    data = _deepcopy_dict(data)
    for key, value in values.items():
        path = list(key) if isinstance(key, (tuple, list)) else str(key).split(".")
        node_cls: Any = cls
        node = data
        for i, part in enumerate(path):
            types_ = _field_types(node_cls)
            if part not in types_:
                where = ".".join(path[:i]) or "top level"
                raise ConfigError(
                    f"--set {'.'.join(path)}: unknown key '{part}' at {where}; valid keys are: {', '.join(types_)}"
                )
            tp = types_[part]
            if i == len(path) - 1:
                node[part] = value
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"--set {'.'.join(path)}: '{part}' is a value, not a group")
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"--set {'.'.join(path)}: '{part}' is not a mapping in the config file")
                node_cls = tp
    return data


def override_keys(overrides: Iterable[str]) -> list[str]:
    """The dotted keys that ``--set`` strings name (syntax-checked, values ignored)."""
    return [".".join(_parse_override(item)[0]) for item in overrides]


def _deepcopy_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy_dict(v) if isinstance(v, dict) else v for k, v in d.items()}


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def preset_dirs(kind: str) -> list[Path]:
    """Where presets of ``kind`` (``gan``, ``classify``) live: the checkout's ``configs/<kind>``
    (editable installs), then ``<prefix>/share/mtf-faces/configs/<kind>`` (where
    ``pip install .`` puts them, through ``data_files`` in setup.cfg)."""
    import sys

    dirs = [Path(__file__).resolve().parents[1] / "configs" / kind]
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix]):
        dirs.append(Path(prefix) / "share" / "mtf-faces" / "configs" / kind)
    return dirs


def find_preset(kind: str, name: str | os.PathLike) -> Path:
    """A YAML path as given, or a preset name (``demo``, ``mtf64``...) looked up in
    :func:`preset_dirs`; a :class:`ConfigError` listing the presets when neither exists."""
    p = Path(name)
    if p.is_file():
        return p
    if p.suffix.lower() in (".yaml", ".yml") and (len(p.parts) > 1 or p.exists()):
        raise ConfigError(f"config file {p} does not exist; pass a YAML file or a preset name")
    stem = p.stem if p.suffix.lower() in (".yaml", ".yml") else p.name
    have: set[str] = set()
    for d in preset_dirs(kind):
        if (d / f"{stem}.yaml").is_file():
            return d / f"{stem}.yaml"
        if d.is_dir():
            have.update(q.stem for q in d.glob("*.yaml"))
    raise ConfigError(f"no {kind} preset {str(name)!r}: pass a YAML file or one of "
                      f"{', '.join(sorted(have)) or '(no presets installed)'}")


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    base: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
) -> T:
    """Defaults of ``cls`` <- ``base`` dict <- YAML file ``path`` <- typed ``values`` (dotted
    keys, e.g. from CLI flags) <- ``overrides`` (``--set`` strings win over flags)."""
    data = _deepcopy_dict(base or {})
    if path is not None:
        _merge(data, read_yaml(path))
    data = apply_values(cls, data, values or {})
    data = apply_overrides(cls, data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{exc} (in {path}" + (" or --set" if overrides else "") + ")") from None
        raise


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file + os.replace)."""
    from gan.util import atomic_write_text

    atomic_write_text(path, dump_config(cfg))
