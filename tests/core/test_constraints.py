"""Constraint compilation to one LLGuidance Lark grammar."""

from __future__ import annotations

import pytest

from gallama_core.pipeline.constraints import (ChoiceConstraint, GrammarConstraint, JsonSchemaConstraint, RegexConstraint,
                                      compile_constraints, grammar_problem)
from gallama_core.errors import InvalidRequestError


def test_no_constraint_is_free():
    assert compile_constraints([]) is None


def test_regex_whole_and_prefix():
    assert compile_constraints([RegexConstraint(pattern="a/b")]) == "start: /a\\/b/"
    assert compile_constraints([RegexConstraint(pattern=r"(Yes|No)\.", prefix_only=True)]) == \
        r"start: /(?:(Yes|No)\.)(?s:.*)/"


def test_json_schema_and_choice_compile():
    grammar = compile_constraints([JsonSchemaConstraint(schema={"type": "object", "properties": {"a": {"type": "integer"}}})])
    assert grammar.startswith("start: %json") and "whitespace_flexible" in grammar
    assert compile_constraints([ChoiceConstraint(choices=("yes", 'say "no"'))]) == 'start: "yes" | "say \\"no\\""'


@pytest.mark.parametrize("constraint,param", [
    (RegexConstraint(param="regex_pattern", pattern="[a-"), "regex_pattern"),
    (RegexConstraint(param="regex_pattern", pattern="(?<=a)b"), "regex_pattern"),
    (JsonSchemaConstraint(param="response_format", schema={"type": "frobnicate"}), "response_format"),
    (JsonSchemaConstraint(param="response_format", schema=[1, 2]), "response_format"),
    (GrammarConstraint(param="grammar", lark="start: undefined_rule"), "grammar"),
])
def test_uncompilable_is_400_naming_field(constraint, param):
    with pytest.raises(InvalidRequestError) as info:
        compile_constraints([constraint])
    assert info.value.param == param and param in info.value.message


def test_conflicting_constraints():
    with pytest.raises(InvalidRequestError, match="regex_pattern, response_format"):
        compile_constraints([RegexConstraint(param="regex_pattern", pattern="a"),
                             JsonSchemaConstraint(param="response_format", schema={})])


def test_grammar_problem_cached_and_none_for_valid():
    assert grammar_problem("start: /[0-9]+/") is None
    assert grammar_problem("start: /[0-9+/")
