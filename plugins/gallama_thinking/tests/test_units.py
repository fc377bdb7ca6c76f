"""Template validation, the structure grammar and the streaming splitter (no model needed)."""

from __future__ import annotations

import pytest

from gallama_core.pipeline.constraints import grammar_problem
from gallama_thinking.plugin import ThinkingConfig
from gallama_thinking.splitter import CONTENT, REASONING, ReasoningSplitter
from gallama_thinking.templates import BUILTIN_TEMPLATES, TemplateError, close_open_tags, parse_template


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("just words", "XML"),
    ("<a>x</a><b>y</b>", "more than one root"),
    ("<a><b>x</a>", "not well-formed"),
    ("<a>unclosed", "not well-formed"),
    ("<a><a>x</a></a>", "must not be used again"),
])
def test_invalid_templates(text, message):
    with pytest.raises(TemplateError, match=message):
        parse_template(text)


def test_structure_grammar_of_the_spec_template():
    template = parse_template(BUILTIN_TEMPLATES["cot"])
    assert template.root == "chain_of_thought"
    assert template.tags[:3] == ("chain_of_thought", "problem", "initial_state")
    assert grammar_problem(template.grammar) is None
    assert '"<steps>" (WS? e4_step){1,8} WS? "</steps>"' in template.grammar  # <step> repeats
    assert template.grammar.count('"<problem>" leaf "</problem>"') == 1
    capped = parse_template(BUILTIN_TEMPLATES["cot"], max_element_tokens=16)
    assert "leaf[max_tokens=16]: TEXT" in capped.grammar and grammar_problem(capped.grammar) is None


def test_close_open_tags():
    assert close_open_tags("<a>\n<b>x</b>\n<c>half") == "</c></a>"
    assert close_open_tags("<a><b>x</b></a>") == ""


def test_config_rejects_a_bad_library_template():
    with pytest.raises(ValueError, match="template 'bad'"):
        ThinkingConfig(templates={"bad": "<a>x</a><b/>"})
    assert "cot" in ThinkingConfig(templates={"x": "<x>y</x>"}).library()


def _run(splitter: ReasoningSplitter, text: str, size: int):
    out = []
    for i in range(0, len(text), size):
        out += splitter.feed(text[i:i + size])
    out += splitter.flush()
    reasoning = "".join(t for k, t in out if k == REASONING)
    content = "".join(t for k, t in out if k == CONTENT)
    return reasoning, content


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 100])
def test_native_think_split_at_any_chunking(size):
    text = "  <think>\nThe user greets me.\n</think>\n\nHello! How can I help?"
    assert _run(ReasoningSplitter("<think>", "</think>"), text, size) == ("\nThe user greets me.\n",
                                                                          "Hello! How can I help?")


@pytest.mark.parametrize("size", [1, 3, 5])
def test_template_split_keeps_the_xml(size):
    text = "<cot><step>a < b</step></cot>\nAnswer: yes"
    assert _run(ReasoningSplitter("<cot>", "</cot>", keep_tags=True), text, size) == (
        "<cot><step>a < b</step></cot>", "Answer: yes")


def test_answers_without_think_are_untouched():
    for text in ["Hello <thin", "<b>bold</b>", "plain"]:
        assert _run(ReasoningSplitter("<think>", "</think>"), text, 1) == ("", text)


def test_prompt_opened_think():
    assert _run(ReasoningSplitter("<think>", "</think>", started=True), "hmm</think>ok", 2) == ("hmm", "ok")
