"""Strict, typed conversion between plain dicts (YAML) and the config dataclasses.

The reference reads keys with `cfg[k] if k in cfg else default`, so a typo silently falls back
to a default. Here every key is checked against the dataclass fields; an unknown key raises a
`ConfigError` naming its full path and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A user-facing configuration error; `str(err)` is one line naming the offending key."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def closest(name: str, candidates: typing.Iterable[str]) -> str | None:
    """The most similar candidate to `name`, or None when nothing is reasonably close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key_error(path: str, key: str, valid: typing.Iterable[str]) -> ConfigError:
    valid = list(valid)
    hint = closest(key, valid)
    where = f"{path}.{key}" if path else key
    suggestion = f" (did you mean `{hint}`?)" if hint else f" (valid keys: {', '.join(valid)})"
    return ConfigError(where, f"unknown key `{key}`{suggestion}")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def convert(value: Any, tp: Any, path: str) -> Any:
    """Convert a YAML value to type `tp`, raising ConfigError with `path` on mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is Literal:
        options = typing.get_args(tp)
        if value in options:
            return value
        hint = closest(str(value), [str(o) for o in options]) if isinstance(value, str) else None
        extra = f" (did you mean `{hint}`?)" if hint else ""
        raise ConfigError(
            path, f"must be one of {', '.join(map(repr, options))}, got {value!r}{extra}"
        )
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(path, f"must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, path)
            except ConfigError as err:
                errors.append(err)
        # A single concrete alternative: its message is the most useful one.
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(path, f"expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [convert(v, item_tp, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): convert(v, val_tp, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; accept it as the number it spells.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(path, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and type mismatches raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise unknown_key_error(path, str(key), fields)
    kwargs = {k: convert(v, hints[k], _join(path, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as error:
        # Sections that check themselves (`sampler` is a `SamplerSpec`): one line with the path.
        raise ConfigError(path, str(error)) from None


def to_dict(obj: Any) -> Any:
    """The plain (YAML/JSON-ready) form of a config object: dicts, lists and scalars only."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge `override` into a copy of `base` (mappings merge, everything else replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_dotted(data: dict, dotted: str, value: Any, cls: type | None = None) -> dict:
    """Return a copy of `data` with `a.b.c = value`, checking each segment against `cls`'s fields."""
    head, _, rest = dotted.partition(".")
    if cls is not None:
        names = {f.name: f for f in dataclasses.fields(cls) if f.init}
        if head not in names:
            parent = ""
            raise unknown_key_error(parent, head, names)
        sub_tp = typing.get_type_hints(cls)[head]
        sub_cls = sub_tp if dataclasses.is_dataclass(sub_tp) else None
    else:
        sub_cls = None
    out = dict(data)
    if not rest:
        out[head] = value
        return out
    if cls is not None and sub_cls is None:
        raise ConfigError(dotted, f"`{head}` is not a section, cannot set `{rest}` inside it")
    child = out.get(head) or {}
    try:
        out[head] = set_dotted(child, rest, value, sub_cls)
    except ConfigError as err:
        raise ConfigError(_join(head, err.path) if err.path else head, err.message) from None
    return out


def dump_yaml(obj: Any) -> str:
    """Canonical YAML text of a config object (key order = field order; stable across runs)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None, width=100)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice; PyYAML alone would silently keep the last value."""

    def __init__(self, key: object, first_line: int, second_line: int):
        self.key, self.first_line, self.second_line = key, first_line, second_line
        super().__init__(f"duplicate key `{key}` at lines {first_line} and {second_line}")


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a mapping holding the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # Only keys written in this mapping count: a `<<: *anchor` merge supplies defaults that
        # written keys may override (how a ladder of cumulative points is spelled).
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise DuplicateKeyError(key, seen[key], line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text (a file's or a `--set` value) strictly; `source` names it in errors."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as err:
        raise ConfigError("", f"{source}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            "", f"{source}:{where} invalid YAML ({getattr(err, 'problem', err)})"
        ) from None


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, turning I/O, syntax and duplicate-key problems into one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"{path}: no such file")
    return parse_yaml(path.read_text(), str(path))


def content_hash(obj: Any, length: int = 16) -> str:
    """Stable hash of a config (or any JSON-able structure): the key for artifact reuse."""
    canonical = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
