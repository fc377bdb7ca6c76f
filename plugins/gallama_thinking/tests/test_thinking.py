"""Thinking templates and the <think> split end to end: gallama run on SmolLM2, the official openai client."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from gallama_core.testing import running_server, smollm2_gguf

# The spec's example, verbatim.
THINKING_TEMPLATE = """
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
"""

APPLES = [{"role": "user", "content": "I went to the market and bought 10 apples. I gave 2 apples to the neighbor "
                                      "and 2 to the repairman. I then went and bought 5 more apples and ate 1. "
                                      "How many apples did I remain with?"}]
TAGS = ("chain_of_thought", "problem", "initial_state", "steps", "step", "answer", "final_answer")


def apples(client, stream=False, **extra):
    # The spec's request, with a smaller answer budget (the spec says 200) to keep the test quick on a CPU.
    return client.chat.completions.create(model="smol", messages=APPLES, temperature=0.1, max_tokens=40, seed=3,
                                          stream=stream, extra_body={"thinking_template": THINKING_TEMPLATE, **extra})


def assert_filled_template(thinking: str):
    root = ET.fromstring(thinking)  # well-formed XML with one root
    assert root.tag == "chain_of_thought"
    assert [child.tag for child in root] == ["problem", "initial_state", "steps", "answer", "final_answer"]
    steps = list(root.find("steps"))
    assert steps and all(step.tag == "step" for step in steps)
    for element in root.iter():
        if len(element) == 0:
            assert element.text and element.text.strip(), element.tag  # every leaf was filled in


def assert_no_template(content: str):
    assert content and content.strip()
    for tag in TAGS:
        assert f"<{tag}>" not in content and f"</{tag}>" not in content, content


@pytest.fixture(scope="module")
def spec_runs(client):
    """The spec example: default, "separate", true, and "separate" streamed, run side by side."""
    jobs = {
        "default": lambda: apples(client),
        "separate": lambda: apples(client, return_thinking="separate"),
        "inline": lambda: apples(client, return_thinking=True),
        "stream": lambda: list(apples(client, stream=True, return_thinking="separate")),
    }
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def test_default_returns_only_the_answer(spec_runs):
    message = spec_runs["default"].choices[0].message
    assert_no_template(message.content)
    assert getattr(message, "reasoning_content", None) is None
    assert getattr(message, "thinking", None) is None
    assert spec_runs["default"].choices[0].finish_reason in ("stop", "length")


def test_separate_returns_the_thinking_apart(spec_runs):
    response = spec_runs["separate"]
    message = response.choices[0].message
    assert_no_template(message.content)
    assert message.thinking == message.reasoning_content
    assert_filled_template(message.reasoning_content)
    # usage counts the thinking pass as well (a token is rarely more than 8 characters)
    assert response.usage.completion_tokens > len(message.reasoning_content) // 8


def test_true_prepends_the_thinking(spec_runs):
    content = spec_runs["inline"].choices[0].message.content
    thinking, sep, answer = content.partition("</chain_of_thought>")
    assert sep and content.startswith("<chain_of_thought>")
    assert_filled_template(thinking + sep)
    assert answer.startswith("\n\n") and answer.strip()
    assert getattr(spec_runs["inline"].choices[0].message, "reasoning_content", None) is None


def test_streamed_separate_uses_reasoning_content(spec_runs):
    chunks = spec_runs["stream"]
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert_filled_template(reasoning)
    assert_no_template(content)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # every piece of thinking comes before the first piece of the answer
    kinds = ["r" if getattr(c.choices[0].delta, "reasoning_content", None) else "c"
             for c in chunks if c.choices and (c.choices[0].delta.content or
                                               getattr(c.choices[0].delta, "reasoning_content", None))]
    assert "".join(kinds).rstrip("c") == "r" * kinds.count("r")


def test_named_templates_from_the_library_and_the_config(client):
    with ThreadPoolExecutor(2) as pool:
        builtin, mine = pool.map(lambda name: client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Is the sky blue?"}], max_tokens=24, temperature=0,
            extra_body={"thinking_template": name, "return_thinking": "separate"}), ["cot", "mine"])
    assert ET.fromstring(builtin.choices[0].message.reasoning_content).tag == "chain_of_thought"
    reflection = ET.fromstring(mine.choices[0].message.reasoning_content)
    assert reflection.tag == "reflection" and [c.tag for c in reflection] == ["idea"]
    assert_no_template(mine.choices[0].message.content)


def test_native_think_is_split_into_reasoning_content(client):
    # The regex makes SmolLM2 itself write "<think>...</think>answer", token by token.
    body = {"regex_pattern": r"<think>[a-z ]{3,40}</think>[A-Za-z ,.!]{3,40}"}
    request = dict(model="smol", messages=[{"role": "user", "content": "Say hello"}], max_tokens=40, temperature=0,
                   seed=1, extra_body=body)
    # one after another after a 1-token warm-up: llama.cpp then computes both generations the same way
    client.chat.completions.create(**{**request, "max_tokens": 1})
    plain = client.chat.completions.create(**request)
    stream = list(client.chat.completions.create(stream=True, **request))
    message = plain.choices[0].message
    assert message.reasoning_content and "<think>" not in message.reasoning_content
    assert message.content and "think>" not in message.content
    streamed_reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in stream)
    streamed_content = "".join(c.choices[0].delta.content or "" for c in stream)
    assert (streamed_reasoning, streamed_content) == (message.reasoning_content, message.content)


def test_native_think_return_thinking_true_keeps_it_inline(client):
    response = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Say hello"}], max_tokens=6, temperature=0,
        extra_body={"leading_prompt": "<think>greet</think>", "return_thinking": True})
    assert response.choices[0].message.content.startswith("<think>greet</think>")
    assert getattr(response.choices[0].message, "reasoning_content", None) is None


@pytest.mark.parametrize("body, param", [
    ({"thinking_template": "<a>x</a><b>y</b>"}, "thinking_template"),
    ({"thinking_template": "<a><b>unclosed</a>"}, "thinking_template"),
    ({"thinking_template": "no-such-template"}, "thinking_template"),
    ({"thinking_template": 42}, "thinking_template"),
    ({"thinking_template": "cot", "return_thinking": "sometimes"}, "return_thinking"),
])
def test_bad_requests_are_400(client, body, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smol", messages=APPLES, max_tokens=4, extra_body=body)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param and info.value.body["type"] == "invalid_request_error"
    assert info.value.body["message"]


def test_two_roots_message_says_so(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smol", messages=APPLES, max_tokens=4,
                                       extra_body={"thinking_template": "<a>x</a><b>y</b>"})
    assert "more than one root" in info.value.body["message"]


def test_thinking_on_legacy_completions_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="smol", prompt="hi", max_tokens=4, extra_body={"thinking_template": "cot"})
    assert "chat/completions" in info.value.body["message"]


def test_without_the_plugin_the_fields_are_a_clear_400(tmp_path):
    env = {"GALLAMA_PLUGINS": "gallama-llamacpp"}  # allow-list without gallama-thinking
    with running_server(["-id", f"model_id={smollm2_gguf()} model_name=smol"], home=tmp_path, env=env) as url:
        bare = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        for field, value in [("thinking_template", THINKING_TEMPLATE), ("return_thinking", "separate")]:
            with pytest.raises(openai.BadRequestError) as info:
                bare.chat.completions.create(model="smol", messages=APPLES, max_tokens=4, extra_body={field: value})
            assert "gallama-thinking" in info.value.body["message"] and info.value.body["param"] == field
