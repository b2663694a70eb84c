"""The JSON Schema of sweep files: generated from the typed config, shipped, and current."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from orchestrator.config import ExperimentConfig
from orchestrator.config.json_schema import (
    REGENERATE,
    SCHEMA_COMMENT,
    SCHEMA_FILE_NAME,
    dotted_keys,
    schema_text,
    sweep_schema,
)
from orchestrator.config.loading import parse_yaml, set_dotted
from search_spaces import SPACES_DIR, available, space_path

SHIPPED = SPACES_DIR / SCHEMA_FILE_NAME


def test_shipped_schema_is_current():
    assert SHIPPED.read_text() == schema_text(), f"stale {SHIPPED.name}; regenerate: {REGENERATE}"


def test_cli_prints_the_schema():
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.frontier", "--schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout == schema_text()


@pytest.mark.parametrize("name", available())
def test_every_sweep_file_names_the_schema_and_satisfies_it(name):
    text = space_path(name).read_text()
    assert text.splitlines()[0] == SCHEMA_COMMENT
    validator().validate(parse_yaml(text, name))


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SHIPPED.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


BAD = {
    "typo in base": "base: {tokenizer: {vf: {cos_margn: 0.5}}}",
    "wrong type": "base: {generator: {training: {steps: many}}}",
    "not an option": "base: {sampler: {method: rk4}}",
    "pair of betas": "base: {generator: {optimizer: {betas: [0.9]}}}",
    "typo in a grid key": "search: {grid: {tokenizer.vf.cos_margn: [0.1]}}",
    "typo in a point": "search: {points: [{generator.model.nam: LightningDiT-B/1}]}",
    "unknown top-level key": "serach: {}",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_schema_rejects_what_the_loader_rejects(case):
    data = {"name": "s", **parse_yaml(BAD[case], case)}
    assert not validator().is_valid(data)


def test_schema_describes_fields_from_their_comments_and_defaults():
    vf = sweep_schema()["$defs"]["VFLossConfig"]["properties"]
    assert vf["cos_margin"]["default"] == 0.5
    assert "issue #78" in vf["input_norm"]["description"]
    assert vf["input_norm"]["enum"] == ["minus_one_one", "imagenet"]


def test_every_dotted_key_in_the_schema_is_one_the_loader_accepts():
    keys = dotted_keys()
    assert "generator.transport.uniform_t_after_step" in keys and "tokenizer.vf" in keys
    for key in keys:
        set_dotted({}, key, None, ExperimentConfig)
