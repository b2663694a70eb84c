"""No config key that nothing reads: every leaf of the schema is read by code outside the config
package (issue 13, item 8: `generator.latent_norm` was hashed and never read, `tracking.log_images`
read nowhere).

How, honestly: a static scan. A leaf counts as read when its name is accessed as an attribute
(`.latent_norm`) or through `getattr(..., "name")` on some non-import line of `orchestrator/` or
`workloads/` outside `orchestrator/config/` (whose schema, presets, identity hashing and validation
define, hash and check keys but do not use them). It cannot prove that the attribute read is on
the config object rather than on something else of the same name, so a generic name (`seed`)
passes more easily than it should; a key whose name appears nowhere, like the two above did,
fails. Sections handed wholesale to a constructor (`tokenizer.arch` -> `AutoencoderKL(**kwargs)`)
are checked instead by the constructor: each leaf must be one of its parameters and be used in
its body. Sweep-level keys are read by the sweep expander (`orchestrator/config/space.py`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import typing
from pathlib import Path

from orchestrator.config.schema import (
    ExperimentConfig,
    SweepConfig,
    TokenizerArchConfig,
    ViTDecoderConfig,
)
from workloads.rae import ViTDecoder
from workloads.vavae import AutoencoderKL

REPO_ROOT = Path(__file__).resolve().parents[1]
# Handed over whole: section -> (its dataclass, the constructor that receives it as **kwargs).
FORWARDED = {
    "tokenizer.arch": (TokenizerArchConfig, AutoencoderKL),
    "tokenizer.decoder": (ViTDecoderConfig, ViTDecoder),
}


def leaves(cls: type, prefix: str = "") -> list[str]:
    """Dotted paths of every non-dataclass field, descending into nested (and optional) sections."""
    hints = typing.get_type_hints(cls)
    paths = []
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        nested = [kind] if dataclasses.is_dataclass(kind) else []
        nested += [arg for arg in typing.get_args(kind) if dataclasses.is_dataclass(arg)]
        if nested:
            paths += leaves(nested[0], f"{prefix}{field.name}.")
        else:
            paths.append(f"{prefix}{field.name}")
    return paths


def code_lines(paths: list[Path]) -> str:
    lines = [line for path in paths for line in path.read_text().splitlines()]
    return "\n".join(line for line in lines if not re.match(r"\s*(from|import)\s", line))


def is_read(name: str, text: str) -> bool:
    return re.search(rf"\.{name}\b|getattr\([^)]*[\"']{name}[\"']", text) is not None


def test_every_schema_leaf_is_read_by_some_stage():
    config_dir = REPO_ROOT / "orchestrator" / "config"
    sources = [
        path
        for root in ("orchestrator", "workloads")
        for path in (REPO_ROOT / root).rglob("*.py")
        if config_dir not in path.parents
    ]
    stage_code = code_lines(sources)
    sweep_code = stage_code + "\n" + code_lines([config_dir / "space.py"])
    unread = []
    for leaf in leaves(ExperimentConfig):
        section = leaf.rsplit(".", 1)[0]
        if section in FORWARDED:
            continue
        if not is_read(leaf.rsplit(".", 1)[-1], stage_code):
            unread.append(leaf)
    unread += [
        f"sweep: {leaf}"
        for leaf in leaves(SweepConfig)
        if not is_read(leaf.rsplit(".", 1)[-1], sweep_code)
    ]
    assert unread == [], f"config keys no stage reads (implement or remove them): {unread}"


def test_forwarded_sections_are_constructor_parameters_it_uses():
    for section, (config_cls, constructor) in FORWARDED.items():
        signature = inspect.signature(constructor.__init__)
        source = textwrap.dedent(inspect.getsource(constructor.__init__))
        body = "\n".join(ast.unparse(statement) for statement in ast.parse(source).body[0].body)
        for field in dataclasses.fields(config_cls):
            assert field.name in signature.parameters, f"{section}.{field.name} is no parameter"
            assert re.search(rf"\b{field.name}\b", body), f"{section}.{field.name} is never used"


def test_the_scan_catches_a_key_nothing_reads():
    # The two keys issue 13 found dead would fail the scan against sources that lack their reads.
    text = "z = (z - stats.mean) / stats.std * cfg.generator.latent_multiplier\n"
    assert is_read("latent_multiplier", text)
    assert not is_read("latent_norm", text)
    assert not is_read("latent_norm", code_lines([]) + "from workloads.dit import latent_norm")
