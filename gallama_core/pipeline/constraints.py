"""Backend-neutral constraints and their compilation to one LLGuidance Lark grammar.

A constraint is data: a regex, a JSON schema, a Lark grammar, a list of choices. Requests and the
``gallama_token_filters`` hook produce them; :func:`compile_constraints` turns them into a single grammar
in LLGuidance's Lark dialect, checks it compiles, and hands the text to the backend. llama.cpp (xllamacpp)
takes it natively; the ExLlama backends build an LLGuidance token filter from the same text. One grammar
language for every backend keeps behaviour identical across them.

(Forced prefixes and stop strings are constraints too, but they live on the request context:
``assistant_prefix`` and ``stop``.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gallama_core.errors import InvalidRequestError


@dataclass(frozen=True)
class Constraint:
    """Base class; ``param`` names the request field the constraint came from (for 400 messages)."""

    param: str | None = None

    def lark_body(self) -> str:
        """The right-hand side of the grammar's ``start`` rule (plus extra rules after a newline)."""
        raise NotImplementedError


@dataclass(frozen=True)
class RegexConstraint(Constraint):
    """The generation matches ``pattern`` (Rust regex syntax); with ``prefix_only`` only its start does."""

    pattern: str = ""
    prefix_only: bool = False

    def lark_body(self) -> str:
        pattern = f"(?:{self.pattern})(?s:.*)" if self.prefix_only else self.pattern
        return "/" + pattern.replace("/", "\\/") + "/"


@dataclass(frozen=True)
class JsonSchemaConstraint(Constraint):
    """The generation is one JSON value valid against ``schema`` (compact whitespace)."""

    schema: Any = None

    def lark_body(self) -> str:
        return json_lark(self.schema if self.schema is not None else {})


#: LLGuidance JSON options: one space after ':' and ',', no free whitespace (weak models otherwise ramble).
COMPACT_JSON = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


def json_lark(schema: Any) -> str:
    """``%json {...}`` for a schema, with gallama's JSON formatting options."""
    if isinstance(schema, dict) and "x-guidance" not in schema:
        schema = {**schema, "x-guidance": COMPACT_JSON}
    return "%json " + json.dumps(schema, ensure_ascii=False)


def close_objects(schema: Any) -> Any:
    """A copy of ``schema`` where objects that list ``properties`` and say nothing about
    ``additionalProperties`` allow no others. Every output still validates against the original schema; the
    generator just cannot wander into invented keys (OpenAI's strict mode does the same)."""
    if isinstance(schema, list):
        return [close_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: (close_objects(value) if key not in ("enum", "const", "default", "examples") else value)
           for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


@dataclass(frozen=True)
class GrammarConstraint(Constraint):
    """A complete Lark grammar (LLGuidance dialect) with a ``start`` rule."""

    lark: str = ""


@dataclass(frozen=True)
class ChoiceConstraint(Constraint):
    """The generation is exactly one of ``choices``."""

    choices: tuple[str, ...] = ()

    def lark_body(self) -> str:
        return " | ".join(lark_literal(choice) for choice in self.choices)


def lark_literal(text: str) -> str:
    """A Lark string literal matching ``text`` exactly."""
    return json.dumps(text, ensure_ascii=False)


def check_json_schema(schema: Any, param: str) -> None:
    """400 unless ``schema`` is a valid JSON schema document."""
    import jsonschema

    if not isinstance(schema, (dict, bool)):
        raise InvalidRequestError(f"{param}: a JSON schema must be an object", param=param)
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequestError(f"{param}: invalid JSON schema: {exc.message}", param=param) from None


def to_lark(constraint: Constraint) -> str:
    if isinstance(constraint, GrammarConstraint):
        return constraint.lark
    if isinstance(constraint, JsonSchemaConstraint):
        check_json_schema(constraint.schema, constraint.param or "json_schema")
    return "start: " + constraint.lark_body()


def compile_constraints(constraints: list[Constraint]) -> str | None:
    """One grammar for the request, or None for free decoding. 400 (naming the field) when a constraint
    does not compile or when two constraints both want to shape the whole output."""
    if not constraints:
        return None
    if len(constraints) > 1:
        names = ", ".join(c.param or type(c).__name__ for c in constraints)
        raise InvalidRequestError(f"these constraints cannot be combined in one request: {names}",
                                  param=constraints[1].param)
    constraint = constraints[0]
    grammar = to_lark(constraint)
    problem = grammar_problem(grammar)
    if problem:
        raise InvalidRequestError(f"{constraint.param or 'grammar'}: cannot be compiled: {problem}",
                                  param=constraint.param)
    return grammar


@lru_cache(maxsize=512)
def grammar_problem(grammar: str) -> str | None:
    """The compile error of an LLGuidance Lark grammar, or None when it compiles."""
    import llguidance

    try:
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            llguidance.grammar_from("lark", grammar))
    except Exception as exc:  # malformed beyond what the validator reports
        return str(exc)
    if is_error:
        return "; ".join(m.strip() for m in messages) or "invalid grammar"
    return None
