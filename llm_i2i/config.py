"""Dataclass configs loaded from YAML plus `key=value` overrides; resolved, hashed and saved with artifacts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or override names an unknown field or a value of the wrong type."""


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """`["alpha1=15", "eval.ks=[5,10]"]` -> nested dict; values parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return from_dict(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, int, float)):
        return str(value)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError:
                continue
    if tp is Any:
        return value
    if origin is dict and isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where or cls.__name__}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _merge(base: dict[str, Any], upd: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    section: str | None = None,
) -> C:
    """Defaults <- YAML file (optionally one top-level `section` of it) <- overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping")
        if section is not None:
            loaded = loaded.get(section, {}) or {}
        data = dict(loaded)
    upd = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    return from_dict(cls, _merge(data, upd), where=str(path) if path else cls.__name__)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def result_config(cfg: Any) -> dict[str, Any]:
    """`to_dict(cfg)` without the fields its class lists in `EXECUTION_ONLY`: those say how a stage runs (actors,
    threads, batch size), not what it produces, so a stage keyed on the rest reuses its finished artifact when a run
    scales out or in; and without `UNKEYED_AT_DEFAULT` fields left at their default."""
    d = to_dict(cfg)
    for k in getattr(type(cfg), "EXECUTION_ONLY", ()):
        d.pop(k)
    _drop_unkeyed_defaults(cfg, d)
    return d


def _drop_unkeyed_defaults(cfg: Any, d: dict[str, Any]) -> None:
    """Drop the fields a class (or a nested config) lists in `UNKEYED_AT_DEFAULT` while they hold their default:
    knobs added after artifacts were cached, which at the default change nothing, so those artifacts stay valid."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in getattr(type(cfg), "UNKEYED_AT_DEFAULT", ()) and value == f.default:
            d.pop(f.name, None)
        elif dataclasses.is_dataclass(value) and isinstance(d.get(f.name), dict):
            _drop_unkeyed_defaults(value, d[f.name])


def config_hash(cfg: Any) -> str:
    payload = json.dumps(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
