"""Finishing a JSON value cut by max_tokens: every prefix of a valid value completes to a valid value."""

from __future__ import annotations

import json

import jsonschema
import pytest

from gallama_core.pipeline.json_completion import completion

EVENT = {"type": "object", "properties": {
    "title": {"type": "string", "minLength": 3},
    "kind": {"type": "string", "enum": ["meeting", "call", "lunch"]},
    "when": {"type": "object", "properties": {"day": {"type": "integer", "minimum": 1, "maximum": 31},
                                              "hour": {"type": "number"}}, "required": ["day"],
             "additionalProperties": False},
    "people": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                                           "vip": {"type": "boolean"}},
                                          "required": ["name"], "additionalProperties": False}, "minItems": 1},
    "notes": {"type": ["string", "null"]},
    "done": {"type": "boolean"}},
    "required": ["title", "kind", "when", "people"], "additionalProperties": False}

DOCS = [
    {"title": "Team sync \"weekly\" \\ ok", "kind": "meeting", "when": {"day": 12, "hour": 9.5},
     "people": [{"name": "Ann", "vip": True}, {"name": "Bo"}], "notes": None, "done": False},
    {"title": "Lunch", "kind": "lunch", "when": {"day": 3}, "people": [{"name": "Émile"}], "done": True},
    {"title": "x" * 40, "kind": "call", "when": {"day": 31, "hour": -1.25e2}, "people": [{"name": ""}]},
]


@pytest.mark.parametrize("doc", DOCS)
def test_every_prefix_of_a_valid_value_completes(doc):
    text = json.dumps(doc, ensure_ascii=False, separators=(", ", ": "))
    failures = []
    for cut in range(1, len(text) + 1):
        prefix = text[:cut]
        tail = completion(prefix, EVENT)
        if tail is None:
            failures.append(prefix)
            continue
        jsonschema.validate(json.loads(prefix + tail), EVENT)
    assert not failures, failures[:5]


def test_tool_arguments_and_plain_values():
    weather = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
    assert completion('{"location": "San Francisco, C', weather) == '"}'
    assert completion('{"loc', weather) == 'ation": ""}'
    assert completion("{", weather) == '"location": ""}'
    assert completion('{"location": "Paris"}', weather) == ""
    assert completion("[1, 2", {"type": "array", "items": {"type": "integer"}}) == "]"
    assert completion("", weather) == '{"location": ""}'  # cut before the arguments began
