"""The artifact format: its prompt, and the LLGuidance Lark grammars that keep the XML well-formed."""

from __future__ import annotations

import json
import re
from typing import Any

from gallama_core.pipeline.constraints import lark_literal

IDENTIFIER = r"[a-z][a-z0-9_-]{0,40}"
LANGUAGE = r"[A-Za-z0-9+#._-]{0,20}"
TITLE = r"[^\"<>&\n]{1,80}"

_TERMINALS = rf"""
TEXT: /(?s:.*)/
IDENT: /{IDENTIFIER}/
ARTIFACT_TYPE: "code" | "self_contained_text"
LANG: /{LANGUAGE}/
TITLE: /{TITLE}/
"""

def fast_grammar(inside_artifact: bool = False) -> str:
    """Any sequence of text and artifacts (Fast mode).

    ``head`` is lazy: the text before an artifact ends at the first ``<artifact`` (so text never contains
    one); the tag's attributes are then forced into shape and the body runs to the first ``</artifact>``
    (and is not blank). The final text is free. ``inside_artifact``: the answer prefix (``leading_prompt``)
    already opened an artifact, so the grammar starts in its body.
    """
    return (("start: body (head attrs body)* TEXT\n" if inside_artifact else "start: (head attrs body)* TEXT\n")
            + 'head[lazy]: TEXT "<artifact"\n'
            + 'attrs: " identifier=\\"" IDENT "\\" type=\\"" ARTIFACT_TYPE "\\" language=\\"" LANG '
              '"\\" title=\\"" TITLE "\\">"\n'
            + "body[lazy]: /[ \\t\\r\\n]*[^ \\t\\r\\n](?s:.*)<\\/artifact>/\n"
            + _TERMINALS)


FAST_GRAMMAR = fast_grammar()

FORMAT_PROMPT = """\
You can answer with artifacts. An artifact is a self-contained piece of content the user may want to \
reuse or edit: code (a program, a function, a script) or a long self-contained text (a story, an email, \
an essay). Put each one in its own artifact tag, and the short explanations around it as plain text:

<artifact identifier="ID" type="TYPE" language="LANGUAGE" title="TITLE">
CONTENT
</artifact>

- identifier: short lowercase name with dashes, unique in the conversation, e.g. "quick-sort-python"
- type: "code" for code, "self_contained_text" for other long text
- language: the programming language for code (python, java, javascript...), empty for text
- title: a few words describing the artifact

Example:
User: Write hello world in python.
Assistant: Here is the program.
<artifact identifier="hello-world-python" type="code" language="python" title="Hello world in Python">
print("Hello, world!")
</artifact>
It prints a greeting.

Write code and long texts only inside artifacts; do not use markdown code fences. Short answers need no \
artifact."""

PLAN_PROMPT = """\
Before answering, plan the parts of your answer as JSON: a list of parts in order, each either \
{"tag_type": "text", "summary": ...} for a short explanation or {"tag_type": "artifact", "artifact_type": \
"code" or "self_contained_text", "identifier": ..., "language": ..., "title": ..., "summary": ...} for \
an artifact. Write only the JSON plan now."""


def plan_schema(max_parts: int) -> dict[str, Any]:
    """JSON schema of the Slow mode's planning pass."""
    summary = {"type": "string", "maxLength": 80}
    return {
        "type": "object",
        "properties": {
            "parts": {
                "type": "array", "minItems": 1, "maxItems": max_parts,
                "items": {"anyOf": [
                    {"type": "object", "additionalProperties": False, "required": ["tag_type", "summary"],
                     "properties": {"tag_type": {"const": "text"}, "summary": summary}},
                    {"type": "object", "additionalProperties": False,
                     "required": ["tag_type", "artifact_type", "identifier", "language", "title", "summary"],
                     "properties": {"tag_type": {"const": "artifact"},
                                    "artifact_type": {"enum": ["code", "self_contained_text"]},
                                    "identifier": {"type": "string", "pattern": f"^{IDENTIFIER}$"},
                                    "language": {"type": "string", "pattern": f"^{LANGUAGE}$"},
                                    "title": {"type": "string", "pattern": f"^{TITLE}$"},
                                    "summary": summary}},
                ]},
            },
        },
        "required": ["parts"],
        "additionalProperties": False,
    }


def plan_grammar(max_parts: int) -> str:
    return "start: %json " + json.dumps(plan_schema(max_parts))


def opening_tag(part: dict[str, Any]) -> str:
    def clean(value: Any, pattern: str, default: str) -> str:
        value = str(value or "")
        return value if re.fullmatch(pattern, value) else default

    return (f'<artifact identifier="{clean(part.get("identifier"), IDENTIFIER, "artifact")}" '
            f'type="{part.get("artifact_type") if part.get("artifact_type") in ("code", "self_contained_text") else "code"}" '
            f'language="{clean(part.get("language"), LANGUAGE, "")}" '
            f'title="{clean(part.get("title"), TITLE, "Artifact")}">')


def planned_grammar(parts: list[dict[str, Any]]) -> str:
    """The answer grammar of Slow mode: exactly the planned artifacts, in order, with their planned tags;
    free text between them (text never containing ``<artifact``)."""
    artifacts = [p for p in parts if p.get("tag_type") == "artifact"]
    rules = []
    sequence = []
    for i, part in enumerate(artifacts):
        tag = opening_tag(part)
        rules.append(f"head{i}[lazy]: TEXT {lark_literal('<artifact')}")
        sequence.append(f"head{i} {lark_literal(tag[len('<artifact'):])} body")
    final = 'TAIL\nTAIL: /(?s:.*)/ & ~/(?s:.*)<artifact(?s:.*)/'
    start = "start: " + " ".join([*sequence, final])
    return "\n".join([start, *rules,
                      "body[lazy]: /[ \\t\\r\\n]*[^ \\t\\r\\n](?s:.*)<\\/artifact>/", "TEXT: /(?s:.*)/"]) + "\n"


def plan_summary(parts: list[dict[str, Any]]) -> str:
    lines = []
    for i, part in enumerate(parts, 1):
        if part.get("tag_type") == "artifact":
            lines.append(f"{i}. artifact {opening_tag(part)}: {part.get('summary', '')}")
        else:
            lines.append(f"{i}. text: {part.get('summary', '')}")
    return "Follow this plan for your answer, in order:\n" + "\n".join(lines)
