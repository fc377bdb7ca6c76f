"""Finish a JSON value that ``max_tokens`` cut: the shortest text that, appended, makes it valid for its schema.

A constrained generation (tool-call arguments, ``response_format`` JSON) is always a *prefix* of a valid value,
so when the budget ends inside it the server can still end it validly by appending: close the open string
(completing an enum value or a property name, padding to ``minLength``), finish a number or a literal, add the
required members an object still lacks with their shortest valid values, fill arrays to ``minItems``, and close
every open container. The text is appended, never rewritten, so streamed deltas stay true. The result is
checked against the schema; when it cannot be made valid (a ``pattern`` cut halfway, schema combinators the
completion does not follow), nothing is appended and the answer stays as it was cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

KEY_SEP, ITEM_SEP = ": ", ", "  # gallama's JSON formatting (constraints.COMPACT_JSON)


@dataclass
class _Frame:
    kind: str  # "object" | "array"
    schema: dict
    keys: list[str] = field(default_factory=list)
    items: int = 0
    # object: "key" (a key or "}" may come), "colon", "value", "after" (after a value: "," or "}")
    # array: "value" (a value or "]" may come), "after"
    state: str = "key"


def _schema(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _member_schema(frame: _Frame, key: str | None) -> dict:
    if frame.kind == "array":
        return _schema(frame.schema.get("items"))
    properties = _schema(frame.schema.get("properties"))
    if key in properties:
        return _schema(properties[key])
    extra = frame.schema.get("additionalProperties")
    return _schema(extra)


def shortest_value(schema: dict, depth: int = 0) -> Any:
    """The shortest JSON value valid for a (simple) schema."""
    if depth > 16:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return min(schema["enum"], key=lambda v: len(json.dumps(v)))
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [shortest_value(_schema(o), depth + 1) for o in schema[key]]
            return min(options, key=lambda v: len(json.dumps(v)))
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = "null" if "null" in kind else (kind[0] if kind else None)
    if kind == "string":
        return "a" * int(schema.get("minLength") or 0)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        value = 0
        if low is not None and value < low or "exclusiveMinimum" in schema and value <= low:
            value = int(low) + 1 if "exclusiveMinimum" in schema or int(low) < low else int(low)
        elif high is not None and (value > high or "exclusiveMaximum" in schema and value >= high):
            value = int(high) - 1 if "exclusiveMaximum" in schema or int(high) > high else int(high)
        return value
    if kind == "boolean":
        return False
    if kind == "array":
        return [shortest_value(_schema(schema.get("items")), depth + 1) for _ in range(int(schema.get("minItems") or 0))]
    if kind == "object" or "properties" in schema:
        properties = _schema(schema.get("properties"))
        return {key: shortest_value(_schema(properties.get(key)), depth + 1) for key in schema.get("required") or []}
    return None


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(ITEM_SEP, KEY_SEP))


def _close_object(frame: _Frame) -> str:
    missing = [key for key in frame.schema.get("required") or [] if key not in frame.keys]
    text = ""
    for key in missing:
        text += (ITEM_SEP if frame.keys else "") + _dump(key) + KEY_SEP + _dump(shortest_value(_member_schema(frame, key)))
        frame.keys.append(key)
    return text + "}"


def _close_array(frame: _Frame) -> str:
    text = ""
    while frame.items < int(frame.schema.get("minItems") or 0):
        text += (ITEM_SEP if frame.items else "") + _dump(shortest_value(_member_schema(frame, None)))
        frame.items += 1
    return text + "]"


def _finish_string(partial: str, schema: dict, is_key: bool, frame: _Frame | None) -> str | None:
    """The rest of a string whose (decoded) beginning is ``partial``, and its closing quote."""
    if is_key and frame is not None:
        names = [k for k in _schema(frame.schema.get("properties")) if k.startswith(partial) and k not in frame.keys]
        required = [k for k in names if k in (frame.schema.get("required") or [])]
        if names:
            return _dump((required or names)[0][len(partial):])[1:]
        if frame.schema.get("additionalProperties") is False:
            return None
        return '"'
    choices = [v for v in schema.get("enum") or ([schema["const"]] if "const" in schema else [])
               if isinstance(v, str) and v.startswith(partial)]
    if choices:
        return _dump(min(choices, key=len)[len(partial):])[1:]
    pad = max(0, int(schema.get("minLength") or 0) - len(partial))
    return "a" * pad + '"'


def _scan(text: str, schema: dict):
    """Walk the prefix; (container stack, what is open at the end). ``open`` is None or one of
    ("string", decoded, escape_pending, is_key, schema) / ("number", text) / ("literal", text)."""
    stack: list[_Frame] = []
    pending_schema = schema  # the schema of the next value
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        frame = stack[-1] if stack else None
        if ch in " \t\r\n":
            i += 1
            continue
        if ch == '"':
            is_key = frame is not None and frame.kind == "object" and frame.state == "key"
            j, decoded, escape = i + 1, [], False
            while j < n:
                c = text[j]
                if escape:
                    escape = False
                elif c == "\\":
                    escape = True
                elif c == '"':
                    break
                decoded.append(c)
                j += 1
            if j >= n:
                raw = "".join(decoded)
                try:
                    value = json.loads('"' + raw + ('"' if not escape else '\\\\"'))
                except ValueError:
                    value = raw
                return stack, ("string", value, escape, is_key, pending_schema)
            value = json.loads(text[i:j + 1])
            if is_key:
                frame.keys.append(value)
                frame.state = "colon"
            else:
                _value_done(stack)
            i = j + 1
            continue
        if ch == ":":
            frame.state = "value"
            pending_schema = _member_schema(frame, frame.keys[-1] if frame.keys else None)
            i += 1
            continue
        if ch == ",":
            frame.state = "key" if frame.kind == "object" else "value"
            if frame.kind == "array":
                pending_schema = _member_schema(frame, None)
            i += 1
            continue
        if ch in "{[":
            stack.append(_Frame("object" if ch == "{" else "array", pending_schema,
                                state="key" if ch == "{" else "value"))
            if ch == "[":
                pending_schema = _member_schema(stack[-1], None)
            i += 1
            continue
        if ch in "}]":
            stack.pop()
            _value_done(stack)
            i += 1
            continue
        j = i
        while j < n and text[j] not in " \t\r\n,:}]":
            j += 1
        token = text[i:j]
        if j >= n:
            kind = "literal" if token[0] in "tfn" else "number"
            return stack, (kind, token)
        _value_done(stack)
        i = j
    return stack, None


def _value_done(stack: list[_Frame]) -> None:
    if stack:
        frame = stack[-1]
        frame.state = "after"
        if frame.kind == "array":
            frame.items += 1


def valid_for(text: str, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, RecursionError, jsonschema.ValidationError, jsonschema.SchemaError):
        return False
    return True


def completion(prefix: str, schema: dict | None) -> str | None:
    """The text to append to ``prefix`` so that it parses as JSON valid for ``schema``; "" when it already
    does; None when no such text was found."""
    schema = _schema(schema)
    if not prefix.strip():
        value = _dump(shortest_value(schema))
        return value if valid_for(value, schema) else None

    def valid(text: str) -> bool:
        return valid_for(text, schema)

    if valid(prefix):
        return ""
    try:
        stack, open_part = _scan(prefix, schema)
    except (ValueError, IndexError, KeyError, AttributeError):
        return None
    tail = ""
    frame = stack[-1] if stack else None
    if open_part is not None:
        if open_part[0] == "string":
            _, decoded, escape, is_key, value_schema = open_part
            if escape:
                tail += "\\"  # an escape cut in the middle: make it an escaped backslash
                decoded += "\\"
            rest = _finish_string(decoded, _schema(value_schema), is_key, frame)
            if rest is None:
                return None
            tail += rest
            if is_key:
                frame.keys.append(decoded + json.loads('"' + rest))
                tail += KEY_SEP + _dump(shortest_value(_member_schema(frame, frame.keys[-1])))
                frame.state = "after"
            else:
                _value_done(stack)
        else:
            kind, token = open_part
            if kind == "literal":
                word = next((w for w in ("true", "false", "null") if w.startswith(token)), None)
                if word is None:
                    return None
                tail += word[len(token):]
            else:
                tail += "0" if token[-1] in "-.eE+" else ""
            _value_done(stack)
    elif frame is not None and frame.kind == "object" and frame.state == "colon":
        tail += KEY_SEP + _dump(shortest_value(_member_schema(frame, frame.keys[-1])))
        frame.state = "after"
    elif frame is not None and frame.state == "value" and (frame.kind == "object" or frame.items or prefix.rstrip()[-1] == ","):
        member = _member_schema(frame, frame.keys[-1] if frame.kind == "object" and frame.keys else None)
        tail += (" " if prefix.endswith(":") else "") + _dump(shortest_value(member))
        _value_done(stack)
    elif frame is not None and frame.kind == "object" and frame.state == "key" and prefix.rstrip().endswith(","):
        remove_comma = None  # a comma was written: a member must follow
        missing = [k for k in frame.schema.get("required") or [] if k not in frame.keys]
        names = missing or [k for k in _schema(frame.schema.get("properties")) if k not in frame.keys]
        if not names:
            return remove_comma
        tail += (" " if not prefix.endswith(" ") else "") + _dump(names[0]) + KEY_SEP + \
            _dump(shortest_value(_member_schema(frame, names[0])))
        frame.keys.append(names[0])
        frame.state = "after"
    while stack:
        open_frame = stack.pop()
        tail += _close_object(open_frame) if open_frame.kind == "object" else _close_array(open_frame)
        _value_done(stack)  # the closed container is a value of its parent
    return tail if valid(prefix + tail) else None
