"""Reading and writing configs (latent.config holds the typed schema): dotted overrides from the
command line, the dict round trip of a run's config.json, and presets from configs/.

    cfg = apply_overrides(load_preset("tiny"), ["train.steps=100", "model.attn_gate=headwise"])
    assert from_dict(to_dict(cfg)) == cfg
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import types
import typing
from pathlib import Path
from typing import Literal

from latent.config import Config, ConfigError, check_type, first_fitting

# ----------------------------------------------------------------------------- overrides


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, object]) -> Config:
    """`["train.steps=100", "model.attn_gate=headwise"]` (or a dict of the same) applied to cfg.

    Strings are parsed by the field's declared type; an unknown key or a value of the wrong type
    is a ConfigError naming the key and what it allows.
    """
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key.sub=value")
            key, raw = item.split("=", 1)
            items.append((key.strip(), raw))
    for key, raw in items:
        cfg = _set_path(cfg, key.split("."), raw, key)
    return cfg


def _set_path(node, parts: list[str], raw, full_key: str):
    hints = typing.get_type_hints(type(node))
    name = parts[0]
    if name not in hints:
        allowed = ", ".join(_leaf_keys(node, full_key.rsplit(".", len(parts))[0] if len(parts) < len(full_key.split(".")) else ""))
        raise ConfigError(f"unknown config key {full_key!r}; allowed here: {allowed}")
    if len(parts) > 1:
        child = getattr(node, name)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"config key {full_key!r}: {name!r} is a value, not a section")
        return dataclasses.replace(node, **{name: _set_path(child, parts[1:], raw, full_key)})
    if dataclasses.is_dataclass(getattr(node, name)):
        raise ConfigError(f"config key {full_key!r} is a section; set one of its fields, e.g. {full_key}.<field>=...")
    value = parse_value(hints[name], raw, full_key)
    return dataclasses.replace(node, **{name: value})


def _leaf_keys(node, prefix: str) -> list[str]:
    keys = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        keys.append(f"{key}.*" if dataclasses.is_dataclass(value) else key)
    return keys


def parse_value(annotation, raw, key: str):
    """Parse `raw` (a string from the command line, or an already typed value) as `annotation`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null"))):
            return None
        return first_fitting(key, raw, args, lambda option: parse_value(option, raw, key))
    if origin is Literal or annotation is str:
        check_type(key, raw, annotation)
        return raw
    if annotation is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes"):
            return True
        if isinstance(raw, str) and raw.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key} takes true or false; got {raw!r}")
    if annotation is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ConfigError(f"{key} takes an int; got {raw!r}")
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key} takes an int; got {raw!r}") from None
    if annotation is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key} takes a number; got {raw!r}")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} takes a number; got {raw!r}") from None
    raise ConfigError(f"{key}: unsupported field type {annotation}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict, cls=None, *, prefix: str = ""):
    """Inverse of to_dict with the same checks as overrides (unknown keys are errors)."""
    cls = Config if cls is None else cls
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise ConfigError(f"unknown config key {key!r}")
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} is a section and takes a mapping")
            kwargs[name] = from_dict(value, hints[name], prefix=key + ".")
        else:
            kwargs[name] = parse_value(hints[name], value, key)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- presets

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def read_config_json(path) -> dict:
    """A run's config.json as a dict; ConfigError naming the file and line when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def load_preset(name_or_path: str) -> Config:
    """A preset name from configs/ (`tiny`, `default`, ...), a configs-style .py file defining
    `get_config() -> Config`, or a config.json written by a run."""
    path = Path(name_or_path)
    if path.suffix == ".json":
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return from_dict(read_config_json(path))
    if path.suffix != ".py":
        path = CONFIGS_DIR / f"{name_or_path}.py"
        if not path.exists():
            known = sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if not p.stem.startswith("_"))
            raise ConfigError(f"unknown config preset {name_or_path!r}; known presets: {known}, or pass a .py/.json path")
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"latent_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} must define get_config() -> latent.config.Config")
    cfg = module.get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, not latent.config.Config")
    return cfg
