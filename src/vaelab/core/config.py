"""Typed configs from strings and JSON: ``--set key=value`` and config.json go through here.

Every config is a dataclass; values are coerced to the field's annotated type, and an unknown key
or a value of the wrong type is a VaelabError that names the key and the accepted choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from vaelab.core.errors import VaelabError

C = TypeVar("C")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, kind: Any, key: str) -> Any:
    """Turn a string (from the CLI) or a JSON value into ``kind``; raise VaelabError if it can't be."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except VaelabError as e:
                errors.append(str(e))
        raise VaelabError(errors[0] if errors else f"{key}: cannot read {value!r}")
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise VaelabError(f"{key} expects a comma-separated list, got {value!r}")
        items = [i for i in items if not (isinstance(i, str) and i.strip() == "")]
        return tuple(coerce(i.strip() if isinstance(i, str) else i, args[0], key) for i in items)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise VaelabError(f"{key} expects true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise VaelabError(f"{key} expects {kind.__name__}, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise VaelabError(f"{key} expects {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise VaelabError(f"{key} expects an integer, got {value!r}")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise VaelabError(f"{key} expects a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {kind} for {key}")


def make_config(cls: type[C], values: dict[str, Any], section: str = "") -> C:
    """Build the dataclass ``cls`` from loosely typed values; unknown keys are refused."""
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        where = f" in {section}" if section else ""
        raise VaelabError(f"unknown config key {unknown[0]!r}{where}; valid keys: {', '.join(sorted(types_))}")
    prefix = f"{section}." if section else ""
    return cls(**{k: coerce(v, types_[k], prefix + k) for k, v in values.items()})


def with_overrides(config: C, values: dict[str, Any], section: str = "") -> C:
    """A copy of ``config`` with some fields replaced (validated again by the dataclass)."""
    return make_config(type(config), {**dataclasses.asdict(config), **values}, section)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """["beta=4", "hidden=200,200"] -> {"beta": "4", "hidden": "200,200"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VaelabError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out
