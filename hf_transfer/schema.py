"""Turn a plain mapping into typed dataclasses, or fail with one line that names the key.

A tiny validator instead of OmegaConf structured configs: it reports unknown keys with the
closest valid names, wrong types with the expected type, and runs in milliseconds (no torch,
no transformers), so a typo on the command line is answered before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from hf_transfer.errors import UserError, did_you_mean

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass `cls` from `data`; `path` is the dotted key of `data` in the config."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserError(f"key '{path}' must be a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            # A recipe file without its header lands under the key 'recipe'.
            header = " (a recipe file must start with '# @package _global_')" if _join(path, key) == "recipe" else ""
            raise UserError(
                f"unknown key '{_join(path, key)}'{did_you_mean(key, fields)}{header}; "
                f"valid keys under '{path}': {', '.join(sorted(fields))}"
            )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        key = _join(path, name)
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise UserError(f"missing key '{key}': {field.metadata.get('help', 'it is required')}")
            continue
        values[name] = convert(data[name], hints[name], key)
    try:
        return cls(**values)
    except ValueError as err:  # a __post_init__ check that spans several fields
        raise UserError(str(err)) from None


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type hint `tp`, converting where the meaning is unambiguous."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise UserError(f"key '{key}' must not be empty (null)")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(value, option, key)
            except UserError as err:
                errors.append(err)
        raise UserError(f"key '{key}' must be {describe(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise UserError(
                f"key '{key}' must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}"
                f"{did_you_mean(str(value), [str(a) for a in allowed])}"
            )
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"key '{key}' must be a list, got {value!r}")
        (item_type,) = typing.get_args(tp)[:1] or (Any,)
        return [convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"key '{key}' must be a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp) or (Any, Any)
        return {convert(k, key_type, key): convert(v, value_type, _join(key, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        # The command line parses `revision=123` as a number: a string field takes it as text.
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"schema type {tp!r} is not supported")
    raise UserError(f"key '{key}' must be {describe(tp)}, got {value!r}")


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        parts = [describe(t) for t in typing.get_args(tp) if t is not type(None)]
        text = " or ".join(parts)
        return text + (" or null" if type(None) in typing.get_args(tp) else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return _TYPE_WORDS.get(tp, getattr(tp, "__name__", str(tp)))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)
