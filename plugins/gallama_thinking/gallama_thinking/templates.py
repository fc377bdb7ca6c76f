"""Thinking templates: validation, the built-in library, the prompt, and the grammar of the thinking pass."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from itertools import groupby

from gallama_core.pipeline.constraints import grammar_problem, lark_literal

#: Built-in named templates; ``gallama.yaml``'s ``thinking.templates`` adds to them or replaces them.
BUILTIN_TEMPLATES: dict[str, str] = {
    "cot": """
<chain_of_thought>
  <problem>{problem_statement}</problem>
  <initial_state>{initial_state}</initial_state>
  <steps>
    <step>{action1}</step>
    <step>{action2}</step>
    <!-- Add more steps as needed -->
  </steps>
  <answer>Provide the answer</answer>
  <final_answer>Only the final answer, no need to provide the step by step problem solving</final_answer>
</chain_of_thought>
""",
    "plan": """
<plan>
  <goal>What the user wants</goal>
  <facts>
    <fact>A relevant fact</fact>
    <!-- Add more facts as needed -->
  </facts>
  <approach>How to answer</approach>
</plan>
""",
    "brief": """
<thinking>Think about the question in a few sentences before answering.</thinking>
""",
}

#: How often a repeatable element (a run of same-tag siblings, like <step>) may occur in the thinking.
MAX_REPEAT = 8

_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


class TemplateError(ValueError):
    """The template is not usable; the message says why (it becomes a 400)."""


@dataclass(frozen=True)
class ThinkingTemplate:
    """A validated XML thinking template."""

    source: str
    root: str
    grammar: str
    #: every tag name used in the template (root first)
    tags: tuple[str, ...] = ()

    @property
    def open_tag(self) -> str:
        return f"<{self.root}>"

    @property
    def close_tag(self) -> str:
        return f"</{self.root}>"


def parse_template(text: str, max_element_tokens: int | None = None) -> ThinkingTemplate:
    """Validate a template (well-formed XML, exactly one root element) and build its grammar (each leaf's
    text limited to ``max_element_tokens`` tokens when given)."""
    source = text.strip()
    if not source:
        raise TemplateError("the thinking template is empty")
    if not source.startswith("<"):
        raise TemplateError("the thinking template must be XML with one root element, e.g. "
                            "<thinking>...</thinking>")
    try:
        root = ET.fromstring(source)
    except ET.ParseError as exc:
        detail = str(exc)
        if "junk after document element" in detail:
            detail = f"more than one root element ({detail})"
        raise TemplateError(f"the thinking template is not well-formed XML: {detail}") from None
    if not _NAME.match(root.tag):
        raise TemplateError(f"unsupported root tag name {root.tag!r}")
    for element in root.iter():
        if element is not root and element.tag == root.tag:
            raise TemplateError(f"the root tag <{root.tag}> must not be used again inside the template")
        if not _NAME.match(element.tag):
            raise TemplateError(f"unsupported tag name {element.tag!r}")
    grammar = structure_grammar(root, max_element_tokens)
    problem = grammar_problem(grammar)
    if problem:  # pragma: no cover - the builder only emits valid grammars
        raise TemplateError(f"the thinking template cannot be turned into a grammar: {problem}")
    tags = tuple(dict.fromkeys(element.tag for element in root.iter()))
    return ThinkingTemplate(source=source, root=root.tag, grammar=grammar, tags=tags)


def structure_grammar(root: ET.Element, max_element_tokens: int | None = None) -> str:
    """An LLGuidance Lark grammar for the template's element structure.

    Every element becomes ``"<tag>" ... "</tag>"``: elements with children contain exactly those children
    in order (whitespace between them), leaf elements contain some free text (not only whitespace) without ``<`` or ``>``. Runs of
    siblings with the same tag (``<step>`` twice) may repeat 1 to ``MAX_REPEAT`` times. Attributes and comments
    are hints for the model, not part of the structure. ``max_element_tokens`` caps each leaf's text, so
    a verbose model still gets through the whole structure within the thinking budget.
    """
    rules: list[str] = []
    counter = iter(range(1_000_000))

    def rule_for(element: ET.Element) -> str:
        name = f"e{next(counter)}_{re.sub(r'[^a-z0-9]', '_', element.tag.lower())}"
        opening, closing = lark_literal(f"<{element.tag}>"), lark_literal(f"</{element.tag}>")
        children = list(element)
        if not children:
            rules.append(f"{name}: {opening} leaf {closing}")
            return name
        parts = []
        for _, group in groupby(children, key=lambda child: child.tag):
            items = list(group)
            child_rule = rule_for(items[0])
            parts.append(f"(WS? {child_rule})" + (f"{{1,{MAX_REPEAT}}}" if len(items) > 1 else ""))
        rules.append(f"{name}: {opening} {' '.join(parts)} WS? {closing}")
        return name

    top = rule_for(root)
    leaf = f"leaf[max_tokens={max_element_tokens}]: TEXT" if max_element_tokens else "leaf: TEXT"
    return "\n".join([f"start: {top}", *rules, leaf, "TEXT: /[ \\t\\r\\n]*[^<>\\s][^<>]*/",
                      "WS: /[ \\t\\r\\n]+/"]) + "\n"


def close_open_tags(text: str) -> str:
    """The closing tags that would make a truncated thinking text well-formed (innermost first)."""
    stack: list[str] = []
    for match in re.finditer(r"<(/?)([A-Za-z_][\w.-]*)\s*>", text):
        closing, tag = match.group(1), match.group(2)
        if not closing:
            stack.append(tag)
        elif stack and stack[-1] == tag:
            stack.pop()
    return "".join(f"</{tag}>" for tag in reversed(stack))


def thinking_instruction(template: ThinkingTemplate) -> str:
    """The system prompt addition that asks the model to think in the template first."""
    return (
        "Before answering, think the request through by filling in this XML template. Replace each "
        "placeholder and instruction inside the tags with your own thinking:\n"
        f"{template.source}\n"
        f"Write the filled template first, starting with {template.open_tag} and ending with "
        f"{template.close_tag}. Then, after it, write your reply to the user in plain text without any "
        "XML tags; the user does not see the template, so the reply must stand on its own."
    )
