"""Config helpers: ``--set KEY=VALUE`` overrides on dataclasses, JSON round trips."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

__all__ = ["apply_overrides", "parse_set", "to_json_dict", "fold_fields", "ConfigError"]


class ConfigError(ValueError):
    """A bad configuration value or key (the CLI prints it as one line, exit 2)."""


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Parse ``["lr=1e-3", "hidden=[64,64]"]``: JSON literals (bare words are strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=1e-3")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word such as linear or beta_tilde
        out[key] = value
    return out


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Coerce/validate ``value`` against a (simple) type annotation."""
    if tp is Any or tp is None:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_check_type(v, a, where) for v, a in zip(value, args))
        inner = args[0] if args else Any
        seq = [_check_type(v, inner, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(
                f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}"
            )
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return value
    return value


def apply_overrides(cfg: Any, overrides: dict[str, Any], *, what: str = "config") -> Any:
    """Return a copy of dataclass ``cfg`` with ``overrides`` applied and type-checked.

    Unknown keys raise :class:`ConfigError` listing the known fields. Each
    dataclass may define ``validate(self)``, called on the result, and a static
    ``upgrade_fields(overrides) -> overrides`` that maps the names of fields it no longer
    has (an old run's ``config.json``) onto its current ones first.
    """
    upgrade = getattr(type(cfg), "upgrade_fields", None)
    if callable(upgrade):
        overrides = upgrade(dict(overrides))
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(
                f"unknown key {key!r} for {what}; known keys: {', '.join(sorted(names))}"
            )
        changes[key] = _check_type(value, hints.get(key, Any), f"{what} key {key!r}")
    new = dataclasses.replace(cfg, **changes)
    validate = getattr(new, "validate", None)
    if callable(validate):
        validate()
    return new


def to_json_dict(cfg: Any) -> dict:
    """A dataclass as a JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def fold_fields(
    old: dict[str, Any], field: str, sources: dict[str, Any], *, what: str = "config"
) -> dict[str, Any]:
    """Fold several old fields into one new ``field`` whose default (``None``) follows the data.

    ``sources`` maps each old field name to its old default. The old fields are removed from
    (a copy of) ``old``; ``field`` becomes the one value that differs from its old default,
    or ``None`` (the new default, which resolves to the same value) when none does. Two
    differing values raise :class:`ConfigError` naming them.

    Example::

        >>> fold_fields({"width": 128, "channels": 8}, "width", {"width": 128, "channels": 16})
        {'width': 8}
    """
    new = {k: v for k, v in old.items() if k not in sources}
    changed = {k: old[k] for k, default in sources.items() if k in old and old[k] != default}
    if len(changed) > 1:
        given = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        raise ConfigError(
            f"{what}: the old fields {given} are now one field {field!r}; set {field} instead"
        )
    new[field] = next(iter(changed.values()), None)
    return new
