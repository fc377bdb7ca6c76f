"""Tool calls in gallama's own text format: the prompt that describes tools, the grammar that forces valid
calls, the rendering of tool-call history, and the incremental parser that turns generated text into OpenAI
tool-call deltas.

Format (Hermes style, which many open models know)::

    <tool_call>
    {"name": "get_current_weather", "arguments": {"location": "Boston"}}
    </tool_call>

The grammar makes every call's ``arguments`` valid against that tool's JSON schema, so the parser can stream
them as they are generated.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from gallama_core.pipeline.constraints import close_objects, json_lark, lark_literal
from gallama_core.api.protocol import ToolCallDelta, ToolCallFunctionDelta

OPEN, CLOSE = "<tool_call>", "</tool_call>"
HEADER = '{"name": '
ARGS_KEY = ', "arguments": '
CALL_END = "}\n" + CLOSE  # the outer object's brace, then the closing tag
#: Most calls in one answer when parallel_tool_calls is on, unless ``output_limits.max_tool_calls`` says otherwise
#: (the grammar ends the answer after that many; copies of an earlier call end it sooner, see RepeatGuard).
MAX_PARALLEL_CALLS = 16

TOOL_PROMPT = """\
# Tools

You may call one or more of the tools below to help with the user's request. The tools, as JSON schemas:

{tools}

To call a tool, answer ONLY with one block per call, in this exact format:
<tool_call>
{{"name": "<tool name>", "arguments": <the arguments as a JSON object>}}
</tool_call>
{choice_rule}"""

CHOICE_RULES = {
    "auto": "If no tool helps, answer the user normally instead, without any <tool_call> block.",
    "required": "You must call at least one tool.",
    "named": "You must call the tool `{name}`.",
}


def tool_prompt(tools: list[dict[str, Any]], mode: str, name: str | None = None) -> str:
    described = "\n".join(json.dumps({"name": t["name"], "description": t.get("description") or "",
                                      "parameters": t["parameters"]}, ensure_ascii=False) for t in tools)
    return TOOL_PROMPT.format(tools=described, choice_rule=CHOICE_RULES[mode].format(name=name))


def call_grammar(tools: list[dict[str, Any]], parallel: bool, allow_text: bool,
                 max_calls: int = MAX_PARALLEL_CALLS, schemas: dict[str, Any] | None = None) -> str:
    """An LLGuidance Lark grammar: one call (or up to ``max_calls`` when ``parallel``) to the given tools, each
    with schema-valid arguments; with ``allow_text`` the answer may instead be free text that does not start with
    a tool-call tag. ``schemas`` (by tool name) replaces a tool's parameters in the grammar (the same schema with
    the server's default caps)."""
    rules = []
    alternatives = []
    for i, tool in enumerate(tools):
        schema = (schemas or {}).get(tool["name"]) or close_objects(tool["parameters"])
        rules.append(f"fn_{i}: {lark_literal(HEADER + json.dumps(tool['name']) + ARGS_KEY)} args_{i} \"}}\"")
        rules.append(f"args_{i}: {json_lark(schema)}")
        alternatives.append(f"fn_{i}")
    call = f'call: {lark_literal(OPEN + chr(10))} ({" | ".join(alternatives)}) {lark_literal(chr(10) + CLOSE)}'
    # Nested optionals rather than Lark's `~ 0..n`, which older LLGuidance builds (llama.cpp's) reject.
    calls = "calls: call" + ' ("\\n" call' * (max_calls - 1) + ")?" * (max_calls - 1) \
        if parallel and max_calls > 1 else "calls: call"
    if allow_text:
        start = "start: calls | TEXT\nTEXT: /(?s:.+)/ & ~/(?s:[ \\t\\r\\n]*<tool_call.*)/"
    else:
        start = "start: calls"
    return "\n".join([start, calls, call, *rules])


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def render_tool_call(name: str, arguments: Any) -> str:
    """One call in the text format (for assistant messages in the history)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return f"{OPEN}\n{HEADER}{json.dumps(name)}{ARGS_KEY}{json.dumps(arguments, ensure_ascii=False)}}}\n{CLOSE}"


# ---------------------------------------------------------------------------------------------- parsing

_HEADER_RE = re.compile(r'\s*' + re.escape(OPEN) + r'\n\{"name": "((?:[^"\\]|\\.)*)", "arguments": ')


def _without_partial_close(arguments: str, tail: str) -> str:
    """The end of a call cut by ``max_tokens``: drop a partial closing sequence (``}\n</``) when what is left
    completes the arguments as JSON, so no tag text ever lands in ``arguments``."""
    for k in range(min(len(tail), len(CALL_END) - 1), 0, -1):
        if tail.endswith(CALL_END[:k]):
            try:
                json.loads(arguments + tail[:-k])
            except ValueError:
                continue
            return tail[:-k]
    return tail


_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)


def bare_calls(text: str, schemas: dict[str, dict]) -> list[tuple[str, str]] | None:
    """The calls in an answer written as bare JSON instead of the tool-call format (``{"name": ...,
    "arguments": {...}}``, a list of them, OpenAI's ``{"type": "function", "function": {...}}``, or one of those
    in a ```json fence): (name, arguments JSON) for each, or None unless the whole answer is such calls to known
    tools with arguments valid for their schemas."""
    from gallama_core.pipeline.json_completion import valid_for

    body = text.strip()
    fenced = _FENCED.fullmatch(body)
    if fenced:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except ValueError:
        return None
    calls = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and isinstance(item.get("function"), dict):
            item = item["function"]
        if not isinstance(item, dict) or set(item) - {"name", "arguments", "parameters", "type", "id"}:
            return None
        name, arguments = item.get("name"), item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if name not in schemas or not isinstance(arguments, dict):
            return None
        encoded = json.dumps(arguments, ensure_ascii=False)
        if not valid_for(encoded, schemas[name]):
            return None
        calls.append((name, encoded))
    return calls or None


@dataclass
class ToolCallParser:
    """Feed generated text; get content text or tool-call deltas back, incrementally.

    The output is plain content unless it starts with ``<tool_call>`` (the grammar guarantees the rest is
    then well-formed calls). Text that might still become a tag is held back until it is decided. With
    ``bare_json`` an answer that starts with ``{`` or a code fence is held back to the end: :meth:`finish` turns
    it into calls when it is calls written as bare JSON (see :func:`bare_calls`), into content otherwise.
    """

    mode: str = "undecided"  # undecided | text | calls | bare (held until the end)
    buffer: str = ""
    calls: list[dict[str, str]] = field(default_factory=list)
    bare_json: dict[str, dict] | None = None  # tool schemas by name, to recover bare JSON calls against
    _in_args: bool = False

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        self.buffer += text
        if self.mode == "undecided":
            stripped = self.buffer.lstrip()
            if stripped.startswith(OPEN):
                self.mode = "calls"
            elif not stripped or OPEN.startswith(stripped):
                return "", []
            elif self.bare_json is not None and (stripped.startswith("{") or stripped.startswith("```")):
                self.mode = "bare"
            elif self.bare_json is not None and "```".startswith(stripped):
                return "", []
            else:
                self.mode = "text"
        if self.mode == "bare":
            return "", []
        if self.mode == "text":
            out, self.buffer = self.buffer, ""
            return out, []
        return "", self._parse_calls()

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """Flush at the end of generation (a truncated call keeps what was generated)."""
        if self.mode == "bare":
            found = bare_calls(self.buffer, self.bare_json or {})
            if found:
                self.mode, self.buffer = "calls", ""
                deltas = []
                for name, arguments in found:
                    call = {"id": new_call_id(), "name": name, "arguments": arguments}
                    self.calls.append(call)
                    deltas.append(ToolCallDelta(index=len(self.calls) - 1, id=call["id"], type="function",
                                                function=ToolCallFunctionDelta(name=name, arguments=arguments)))
                return "", deltas
        if self.mode != "calls":
            out, self.buffer = self.buffer, ""
            return out, []
        deltas = self._parse_calls()
        if self._in_args and self.buffer:
            deltas.append(self._args_delta(_without_partial_close(self.calls[-1]["arguments"], self.buffer)))
            self.buffer = ""
        return "", deltas

    def complete_cut_call(self, schemas: dict[str, dict]) -> list[ToolCallDelta]:
        """After :meth:`finish` on an answer that ``max_tokens`` cut: the text that ends the last call's
        arguments as JSON valid for its tool's schema (see :mod:`gallama_core.pipeline.json_completion`)."""
        from gallama_core.pipeline.json_completion import completion

        if self.mode != "calls" or not self.calls:
            return []
        call = self.calls[-1]
        tail = completion(call["arguments"], schemas.get(call["name"]))
        return [self._args_delta(tail)] if tail else []

    def _args_delta(self, fragment: str) -> ToolCallDelta:
        self.calls[-1]["arguments"] += fragment
        return ToolCallDelta(index=len(self.calls) - 1, function=ToolCallFunctionDelta(arguments=fragment))

    def _parse_calls(self) -> list[ToolCallDelta]:
        deltas: list[ToolCallDelta] = []
        while True:
            if not self._in_args:
                match = _HEADER_RE.match(self.buffer)
                if not match:
                    return deltas
                name = json.loads(f'"{match.group(1)}"')
                call = {"id": new_call_id(), "name": name, "arguments": ""}
                self.calls.append(call)
                deltas.append(ToolCallDelta(index=len(self.calls) - 1, id=call["id"], type="function",
                                            function=ToolCallFunctionDelta(name=name, arguments="")))
                self.buffer = self.buffer[match.end():]
                self._in_args = True
            end = self.buffer.find(CALL_END)
            if end < 0:
                safe = len(self.buffer) - (len(CALL_END) - 1)
                if safe > 0:
                    deltas.append(self._args_delta(self.buffer[:safe]))
                    self.buffer = self.buffer[safe:]
                return deltas
            if end:
                deltas.append(self._args_delta(self.buffer[:end]))
            self.buffer = self.buffer[end + len(CALL_END):]
            self._in_args = False


@dataclass
class RepeatGuard:
    """Drops a call that repeats an earlier call of the same answer and says the answer is complete there: a
    weak model under ``required`` otherwise fills every allowed call with copies (or with a cycle of two calls),
    and an agent would run the same tool again and again.

    A repeat is the same tool with the same arguments, or with arguments that only add or leave out some that
    the earlier call had (every argument both give equal, strings compared without case and outer spaces):
    ``get_weather(Paris)`` then ``get_weather(Paris, unit=celsius)``. A call to the same tool with a different
    value (``get_weather(London)``) is a call of its own. The deltas of a later call to a tool already called
    are held back until that call is complete (then they are sent, or dropped with the rest of the answer)."""

    held: list[ToolCallDelta] = field(default_factory=list)
    suspect: int | None = None  # index of the call whose deltas are held

    @staticmethod
    def _normal(value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().casefold()
        if isinstance(value, dict):
            return {k: RepeatGuard._normal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [RepeatGuard._normal(v) for v in value]
        return value

    @classmethod
    def repeats(cls, calls: list[dict[str, str]], index: int) -> bool:
        """Whether call ``index`` repeats an earlier call (see the class)."""
        call = calls[index]
        try:
            mine = cls._normal(json.loads(call["arguments"] or "{}"))
        except ValueError:
            return False
        for earlier in calls[:index]:
            if earlier["name"] != call["name"]:
                continue
            try:
                theirs = cls._normal(json.loads(earlier["arguments"] or "{}"))
            except ValueError:
                continue
            if mine == theirs:
                return True
            if isinstance(mine, dict) and isinstance(theirs, dict) and (mine.keys() <= theirs.keys()
                                                                      or theirs.keys() <= mine.keys()):
                if all(mine[k] == theirs[k] for k in mine.keys() & theirs.keys()):
                    return True
        return False

    def _resolve(self, calls: list[dict[str, str]], out: list[ToolCallDelta]) -> bool:
        """The held call is complete: drop it and what follows when it repeats (True), else send it."""
        index, held = self.suspect, self.held
        self.suspect, self.held = None, []
        if self.repeats(calls, index):
            del calls[index:]
            return True
        out += held
        return False

    def filter(self, deltas: list[ToolCallDelta], parser: ToolCallParser) -> tuple[list[ToolCallDelta], bool]:
        """The deltas to send, and whether the answer ended with a dropped repeat."""
        out: list[ToolCallDelta] = []
        calls = parser.calls
        for delta in deltas:
            index = delta.index
            if self.suspect is not None and index > self.suspect and self._resolve(calls, out):
                return out, True  # the held call ended where the next began, and it was a repeat
            if delta.id is not None and any(c["name"] == calls[index]["name"] for c in calls[:index]):
                self.suspect, self.held = index, []
            if index == self.suspect:
                self.held.append(delta)
            else:
                out.append(delta)
        if self.suspect is not None and (self.suspect < len(calls) - 1 or not parser._in_args):
            if self._resolve(calls, out):
                return out, True
        return out, False

    def flush(self) -> list[ToolCallDelta]:
        """At the end of the answer: a held call that was cut before it completed is sent as it is."""
        held, self.held, self.suspect = self.held, [], None
        return held
