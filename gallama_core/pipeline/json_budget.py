"""Keeping a constrained JSON value (tool-call arguments, ``response_format``) valid within ``max_tokens``.

Two parts, used by the function-calling and format-enforcement stream processors:

- :func:`closing_reserve`: how many of the request's tokens to keep back from sampling so that the text which
  ends a cut value (:func:`gallama_core.pipeline.json_completion.completion`: close the string, add the missing
  required members with their shortest values, close the containers) still fits in the budget. The engine
  samples ``max_tokens - reserve`` tokens; when that runs out the server appends the closing text and the
  answer ends with ``finish_reason: "length"``.
- :class:`RepetitionWatch`: notices a string value that repeats itself (a weak model inside an unbounded
  string: "the cat the cat the cat ..."), so the server can close the value there instead of letting it run to
  the budget.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from gallama_core.pipeline.json_completion import shortest_value

#: Characters of closing text (JSON punctuation, property names, short literals) per token, estimated low so
#: the reserve errs on the side of fitting: byte-level BPE vocabularies merge `", "`, `": `, `"}` and most
#: property names into one token each.
CLOSING_CHARS_PER_TOKEN = 2.0
#: The reserve never takes more than this share of the budget: the model keeps at least half of it.
MAX_RESERVE_SHARE = 0.5


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _children(schema: dict) -> Iterable[dict]:
    properties = schema.get("properties")
    if isinstance(properties, dict):
        yield from (s for s in properties.values() if isinstance(s, dict))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield schema[key]
    for key in ("anyOf", "oneOf", "allOf"):
        yield from (s for s in schema.get(key) or [] if isinstance(s, dict))


def closing_chars(schema: Any, depth: int = 0) -> int:
    """An upper estimate of the characters that end a value of ``schema`` cut anywhere: its shortest complete
    form, plus the longest property name it may be cut in, plus the same for the deepest member it may be cut
    inside."""
    if not isinstance(schema, dict):
        return 4
    try:
        own = len(_dump(shortest_value(schema)))
    except (TypeError, ValueError):
        own = 8
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    own += max((len(name) + 4 for name in properties), default=0)
    if depth >= 8:
        return own
    return own + max((closing_chars(child, depth + 1) for child in _children(schema)), default=0)


def closing_reserve(schemas: Iterable[Any], max_tokens: int | None) -> int:
    """Tokens to keep back from sampling for the closing text of the largest of ``schemas``."""
    if not max_tokens:
        return 0
    chars = max((closing_chars(schema) for schema in schemas), default=0)
    if not chars:
        return 0
    wanted = math.ceil(chars / CLOSING_CHARS_PER_TOKEN) + 1
    return min(wanted, int(max_tokens * MAX_RESERVE_SHARE))


class RepetitionWatch:
    """Feed the text of one JSON value as it is generated; :attr:`repeating` turns true when the string being
    written ends in at least ``min_copies`` copies of one piece covering at least ``min_span`` characters.

    The scan is incremental (each character is looked at once for the string state); the repetition check
    looks only at the end of the open string."""

    def __init__(self, min_span: int = 64, min_copies: int = 4, max_unit: int = 160):
        self.min_span, self.min_copies, self.max_unit = min_span, min_copies, max_unit
        self.in_string = False
        self._escape = False
        self._string = []  # raw characters of the open string
        self._tail = ""  # the last characters of the whole value (items that repeat, outside strings too)
        self.repeating = False

    def feed(self, text: str) -> bool:
        grew = False
        for ch in text:
            if not self.in_string:
                if ch == '"':
                    self.in_string, self._string = True, []
                continue
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == '"':
                self.in_string = False
                continue
            self._string.append(ch)
            grew = True
        self._tail = (self._tail + text)[-4 * self.max_unit * self.min_copies:]
        if not self.repeating and not self.in_string and text.strip():
            # whole members repeated over and over ("cats", "cats", ...): a stricter count, since a real list
            # may hold a few equal items
            self.repeating = ends_in_repeats(self._tail.rstrip(", "), 2 * self.min_span, 2 * self.min_copies,
                                             self.max_unit)
        if grew and self.in_string and len(self._string) >= self.min_span:
            self.repeating = self.repeating or ends_in_repeats("".join(self._string[-2 * self.max_unit
                                                                                    * self.min_copies:]),
                                                               self.min_span, self.min_copies, self.max_unit)
        return self.repeating


def ends_in_repeats(text: str, min_span: int = 64, min_copies: int = 4, max_unit: int = 160) -> bool:
    """Whether ``text`` ends in ``k >= min_copies`` copies of one piece with ``k * len(piece) >= min_span``."""
    n = len(text)
    for unit in range(1, min(max_unit, n // min_copies) + 1):
        copies = max(min_copies, -(-min_span // unit))
        if unit * copies <= n and text.endswith(text[-unit:] * copies):
            return True
    return False
