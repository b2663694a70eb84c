"""A JSON Schema of sweep files, generated from the typed config so editors complete and check keys.

`python -m orchestrator.frontier --schema` prints it; the copy shipped as
`search_spaces/frontier.schema.json` is named on the first line of every sweep file
(`# yaml-language-server: $schema=./frontier.schema.json`), and a test fails when it is stale.
Field descriptions are the `#` comments above each field in `schema.py`, so the explanation a
reader of the code sees is the one an editor shows on hover.

The schema describes what `loading.from_dict` accepts: every mapping is closed (an unknown key is
an error there too), `base` is a partial `ExperimentConfig`, and grid, point and Optuna keys are
the dotted paths `set_dotted` accepts. Cross-field rules (`validation.py`) stay in Python.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from typing import Any, Literal, Union

from orchestrator.config.schema import ExperimentConfig, SweepConfig

SCHEMA_FILE_NAME = "frontier.schema.json"
SCHEMA_COMMENT = f"# yaml-language-server: $schema=./{SCHEMA_FILE_NAME}"
REGENERATE = f"python -m orchestrator.frontier --schema > search_spaces/{SCHEMA_FILE_NAME}"


def field_comments(cls: type) -> dict[str, str]:
    """The `#` comment lines directly above each field of dataclass `cls` and the one trailing
    it on its own line, joined."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"(\w+)\s*:[^#]*(?:#\s*(.*))?$", stripped)
        if match:
            text = " ".join([*pending, *([match.group(2)] if match.group(2) else [])])
            if text:
                comments[match.group(1)] = text
        pending = []
    return comments


def dotted_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every path `set_dotted` accepts: sections and leaves, in field order."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        path = f"{prefix}{f.name}"
        keys.append(path)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += dotted_keys(hints[f.name], f"{path}.")
    return keys


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, dict] = {}

    def of_type(self, tp: Any) -> dict:
        origin = typing.get_origin(tp)
        if tp is Any or tp is object:
            return {}
        if dataclasses.is_dataclass(tp):
            return self.ref(tp)
        if origin is Literal:
            return {"enum": list(typing.get_args(tp))}
        if origin in (Union, types.UnionType):
            options = [self.of_type(a) for a in typing.get_args(tp)]
            return options[0] if len(options) == 1 else {"anyOf": options}
        if tp is type(None):
            return {"type": "null"}
        if origin is tuple:
            args = typing.get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.of_type(args[0])}
            return {
                "type": "array",
                "prefixItems": [self.of_type(a) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        if origin is dict:
            return {"type": "object", "additionalProperties": self.of_type(typing.get_args(tp)[1])}
        simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
        if tp in simple:
            return {"type": simple[tp]}
        raise TypeError(f"no JSON Schema for config type {tp!r}")

    def ref(self, cls: type) -> dict:
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: a type may (indirectly) refer to itself
            self.defs[name] = self.dataclass(cls)
        return {"$ref": f"#/$defs/{name}"}

    def dataclass(self, cls: type) -> dict:
        hints = typing.get_type_hints(cls)
        comments = field_comments(cls)
        properties: dict[str, dict] = {}
        required = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            prop = dict(self.field_type(cls, f.name, hints[f.name]))
            if f.name in comments:
                prop["description"] = comments[f.name]
            default = _default(f)
            if default is dataclasses.MISSING:
                required.append(f.name)
            elif not dataclasses.is_dataclass(hints[f.name]):
                prop["default"] = default
            properties[f.name] = prop
        doc = inspect.cleandoc(cls.__doc__ or "")
        out: dict[str, Any] = {"type": "object"}
        if doc and not doc.startswith(f"{cls.__name__}("):  # not the generated signature
            out["description"] = doc.split("\n\n")[0].replace("\n", " ")
        out |= {"properties": properties, "additionalProperties": False}
        if required:
            out["required"] = required
        return out

    def field_type(self, cls: type, name: str, tp: Any) -> dict:
        # Typed as plain mappings in Python, these hold config keys the schema can spell out.
        if cls is SweepConfig and name == "base":
            # A partial ExperimentConfig, merged over the preset (`space.build_config`).
            return self.ref(ExperimentConfig)
        if name in ("grid", "points", "space") and cls.__name__ in ("SearchConfig", "OptunaConfig"):
            keys = {"propertyNames": {"enum": dotted_keys()}}
            if name == "grid":
                return {"type": "object", **keys, "additionalProperties": {"type": "array"}}
            if name == "points":
                return {"type": "array", "items": {"type": "object", **keys}}
            return {"type": "object", **keys, "additionalProperties": OPTUNA_DISTRIBUTION}
        return self.of_type(tp)


OPTUNA_DISTRIBUTION = {
    "type": "object",
    "properties": {
        "type": {"enum": ["choice", "uniform", "loguniform", "randint"]},
        "values": {"type": "array"},
        "low": {"type": "number"},
        "high": {"type": "number"},
    },
    "required": ["type"],
    "additionalProperties": False,
}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return dataclasses.MISSING
    return list(value) if isinstance(value, tuple) else value


def sweep_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a sweep file."""
    builder = _Builder()
    root = builder.dataclass(SweepConfig)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ldm-frontier sweep file",
        "description": f"Generated from orchestrator/config/schema.py; regenerate: {REGENERATE}",
        **root,
        "$defs": dict(sorted(builder.defs.items())),
    }


def schema_text() -> str:
    """The shipped file's exact text."""
    return json.dumps(sweep_schema(), indent=2) + "\n"
