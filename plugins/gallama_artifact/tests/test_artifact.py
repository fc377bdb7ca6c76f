"""Artifact mode end to end: gallama run on SmolLM2, driven by the official openai client."""

from __future__ import annotations

import contextlib
import io
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from gallama_core.testing import running_server, smollm2_gguf

OPEN = '<artifact identifier="{id}" type="{type}" language="{lang}" title="{title}">\n'

# (prompt, leading_prompt or None). SmolLM2-135M rarely chooses an artifact by itself; the prompts with a
# leading_prompt open one, so the model's own text fills and closes it under the grammar.
PROMPTS = [
    ("Explain in one liner what quicksort is and write me quicksort in python and Java", None),
    ("Write hello world in python", None),
    ("Tell me a 50-word story about a llama", None),
    ("What is the capital of France?", None),
    ("Write a bash script that counts files in a folder", None),
    ("Write an email to my boss asking for a day off", None),
    ("List three fruits", None),
    ("Write a javascript function that adds two numbers", None),
    ("Write a haiku about the sea", None),
    ("How do I reverse a list in python?", None),
    ("Write hello world in python",
     "Here is the program.\n" + OPEN.format(id="hello-python", type="code", lang="python", title="Hello world")),
    ("Write a function that returns the square of a number in Java",
     OPEN.format(id="square-java", type="code", lang="java", title="Square in Java")),
    ("Write a short poem about the moon",
     "A poem:\n" + OPEN.format(id="moon-poem", type="self_contained_text", lang="", title="Moon poem")),
    ("Write quicksort in python",
     "Quicksort picks a pivot and partitions.\n" + OPEN.format(id="quicksort", type="code", lang="python",
                                                                  title="Quicksort in Python")),
    ("Write a SQL query that selects all users",
     OPEN.format(id="users-sql", type="code", lang="sql", title="Select users")),
    ("Write a story about a brave llama",
     "Sure.\n" + OPEN.format(id="llama-story", type="self_contained_text", lang="", title="The brave llama")),
]

META_KEYS = {"tag_type", "artifact_type", "identifier", "title", "language"}


def assert_valid_meta(meta):
    assert isinstance(meta, dict), meta
    if meta["tag_type"] == "text":
        assert meta == {"tag_type": "text"}
        return
    assert meta["tag_type"] == "artifact" and set(meta) == META_KEYS, meta
    assert meta["artifact_type"] in ("code", "self_contained_text")
    assert re.fullmatch(r"[a-z][a-z0-9_-]{0,40}", meta["identifier"]), meta
    assert re.fullmatch(r"[^\"<>&\n]{1,80}", meta["title"]), meta
    assert re.fullmatch(r"[A-Za-z0-9+#._-]{0,20}", meta["language"]), meta


def assert_no_tags(text):
    assert "<artifact" not in text and "</artifact>" not in text, text


def request(prompt, leading):
    body = {"artifact": "Fast"}
    if leading:
        body["leading_prompt"] = leading
    return dict(model="smol", messages=[{"role": "user", "content": prompt}], max_tokens=40, temperature=0,
                seed=7, extra_body=body)


def non_streamed(client, prompt, leading):
    response = client.chat.completions.create(**request(prompt, leading))
    return [(c.message.artifact_meta, c.message.content, c.finish_reason) for c in response.choices]


def streamed(client, prompt, leading):
    chunks = list(client.chat.completions.create(stream=True, **request(prompt, leading)))
    parts: list[list] = []
    for chunk in chunks:
        delta = chunk.choices[0].delta
        meta = delta.artifact_meta  # every chunk carries it (AttributeError otherwise)
        assert_valid_meta(meta)
        if delta.role == "assistant":  # the opening role chunk: no content yet
            assert not delta.content and meta == {"tag_type": "text"}
            continue
        assert delta.content, chunk  # every other chunk has content (the spec's snippet prints it)
        assert_no_tags(delta.content)
        if not parts or parts[-1][0] != meta:
            parts.append([meta, "", None])
        parts[-1][1] += delta.content
        parts[-1][2] = chunk.choices[0].finish_reason or parts[-1][2]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    return [tuple(p[:2]) for p in parts], chunks[-1].choices[0].finish_reason


def test_parts_are_well_formed_streamed_and_not(client):
    assert len(PROMPTS) >= 15
    with ThreadPoolExecutor(8) as pool:
        plain = list(pool.map(lambda p: non_streamed(client, *p), PROMPTS))
        stream = list(pool.map(lambda p: streamed(client, *p), PROMPTS))
    artifacts = 0
    for (prompt, leading), parts, (stream_parts, stream_finish) in zip(PROMPTS, plain, stream):
        for kind, items in (("non-streamed", parts), ("streamed", [(*p, stream_finish) for p in stream_parts])):
            assert items, (kind, prompt)
            for meta, content, finish in items:
                assert_valid_meta(meta)
                assert_no_tags(content)
                assert content and content == content.strip(), (kind, prompt, items)
                assert finish in ("stop", "length")
            # consecutive parts differ in kind or identity (a new choice = a new part)
            assert all(a[0] != b[0] for a, b in zip(items, items[1:])), (kind, items)
            if leading:  # the artifact the prefix opened is there, with the model's content
                opened = re.search(r'identifier="([^"]+)"', leading).group(1)
                assert any(m.get("identifier") == opened and c for m, c, _ in items), (kind, items)
            artifacts += sum(meta["tag_type"] == "artifact" for meta, _, _ in items)
    assert artifacts >= 12


def test_streamed_parts_reassemble_to_the_non_streamed_choices(client):
    # Same prompt, temperature 0, fixed seed. Run one after another, after a 1-token warm-up request: llama.cpp
    # then computes both generations the same way (prompt from its cache, one sequence in the batch), so the
    # text is identical and only the response shape differs.
    for prompt, leading in [PROMPTS[0], PROMPTS[2], PROMPTS[10], PROMPTS[11], PROMPTS[13]]:
        warm = request(prompt, leading)
        warm["max_tokens"] = 1
        client.chat.completions.create(**warm)
        stream_parts, stream_finish = streamed(client, prompt, leading)
        parts = non_streamed(client, prompt, leading)
        assert stream_parts == [(meta, content) for meta, content, _ in parts], prompt
        assert stream_finish == parts[-1][2]


def test_spec_streaming_snippet_prints_parts(client):
    completion = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Write quicksort in python"}],
        stream=True, max_tokens=40, temperature=0,
        extra_body={"artifact": "Fast", "leading_prompt": "Quicksort.\n" + OPEN.format(
            id="qs", type="code", lang="python", title="Quicksort")},
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        current_content_type = None
        for chunk in completion:
            if current_content_type != chunk.choices[0].delta.artifact_meta["tag_type"]:
                print("\n------------------------------")
                print(chunk.choices[0].delta.artifact_meta)
                print("\n------------------------------")
                current_content_type = chunk.choices[0].delta.artifact_meta["tag_type"]
            print(chunk.choices[0].delta.content, end='')
    printed = out.getvalue()
    assert "None" not in printed and "<artifact" not in printed
    assert "'tag_type': 'artifact'" in printed and "'identifier': 'qs'" in printed
    assert printed.index("'tag_type': 'text'") < printed.index("'tag_type': 'artifact'")
    assert "Quicksort." in printed


def test_spec_non_streaming_example(client):
    completion = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user",
                   "content": "Explain in one liner what quicksort is and write me quicksort in python and Java"}],
        max_tokens=40, temperature=0, extra_body={"artifact": "Fast"})
    assert completion.choices
    for index, choice in enumerate(completion.choices):
        assert choice.index == index
        assert_valid_meta(choice.message.artifact_meta)
        assert_no_tags(choice.message.content)
    assert completion.usage.completion_tokens > 0


def test_slow_mode_plans_then_answers_in_well_formed_parts(client):
    response = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Write hello world in python"}], max_tokens=40,
        temperature=0, extra_body={"artifact": "Slow"})
    assert response.choices
    for choice in response.choices:
        assert_valid_meta(choice.message.artifact_meta)
        assert_no_tags(choice.message.content)
        assert choice.message.content
    assert response.usage.completion_tokens > 0


def test_slow_mode_streams(client):
    chunks = list(client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Write a haiku about rain"}], max_tokens=32,
        temperature=0, stream=True, extra_body={"artifact": "slow"}))
    assert all(c.choices[0].delta.artifact_meta["tag_type"] in ("text", "artifact") for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()


@pytest.mark.parametrize("body, param", [
    ({"artifact": "Medium"}, "artifact"),
    ({"artifact": 3}, "artifact"),
    ({"artifact": "Fast", "regex_pattern": "[a-z]+"}, "regex_pattern"),
    ({"artifact": "Fast", "leading_prompt": '<artifact identifier="a" type='}, "leading_prompt"),
])
def test_bad_requests_are_400(client, body, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4, extra_body=body)
    error = info.value.body
    assert info.value.status_code == 400
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] in (param, "artifact"), error


def test_artifact_on_legacy_completions_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="smol", prompt="hi", max_tokens=4, extra_body={"artifact": "Fast"})
    assert info.value.body["param"] == "artifact"
    assert "chat/completions" in info.value.body["message"]


def test_web_ui_is_served(server):
    page = httpx.get(server + "/artifact/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/artifact/static/app.js" in page.text and 'id="panel"' in page.text
    script = httpx.get(server + "/artifact/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "/v1/chat/completions" in script.text and "artifact_meta" in script.text
    assert httpx.get(server + "/artifact", follow_redirects=False).status_code in (307, 302)
    missing = httpx.get(server + "/artifact/static/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["message"]


def test_without_the_plugin_the_field_is_a_clear_400(tmp_path):
    env = {"GALLAMA_PLUGINS": "gallama-llamacpp"}  # allow-list without gallama-artifact
    with running_server(["-id", f"model_id={smollm2_gguf()} model_name=smol"], home=tmp_path, env=env) as url:
        bare = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            bare.chat.completions.create(model="smol", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                         extra_body={"artifact": "Fast"})
        assert "gallama-artifact" in info.value.body["message"]
        assert info.value.body["param"] == "artifact"
        assert httpx.get(url + "/artifact/").status_code == 404
