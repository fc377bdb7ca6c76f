"""ExLlamaV2 backend on a GPU with a real (random-weight) model: skipped without CUDA or GALLAMA_EXL_TINY.

scripts/gpu_check.sh makes the model and runs these; they load the model once per module.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from gallama_core.models.backend import GenerationRequest, SamplingParams
from gallama_core.pipeline.constraints import JsonSchemaConstraint, RegexConstraint, compile_constraints
from gallama_core.errors import GallamaError, InvalidRequestError
from gallama_core.plugin_system.registrations import LoadProgress

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def backend(tiny_model):
    from gallama_exllama.backend import load_exllama
    from gallama_exllama.settings import ExLlamaSettings

    b = load_exllama(ExLlamaSettings(model_id=tiny_model, model_name="tiny", max_seq_len=1024, cache_quant="FP16"),
                     LoadProgress())
    yield b
    asyncio.run(b.close())


def run(coro):
    return asyncio.run(coro)


async def collect(backend, request):
    chunks = [c async for c in backend.generate(request)]
    return "".join(c.text for c in chunks), chunks


def test_attention_self_check_chose_a_verified_path(backend):
    report = backend.attention
    assert report["chosen"] in ("flash", "matmul")
    assert report["matmul_decode_vs_prefill"] < 2e-2
    assert backend.chat_template is not None and "<|im_start|>" in backend.chat_template.source


def test_greedy_is_deterministic_and_counts_tokens(backend):
    req = GenerationRequest(prompt="<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", max_tokens=24,
                            sampling=SamplingParams(temperature=0))
    a, chunks = run(collect(backend, req))
    b, _ = run(collect(backend, req))
    assert a == b
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length") and last.prompt_tokens > 5
    assert 0 < last.completion_tokens <= 24


def test_concurrent_requests_all_finish(backend):
    async def many():
        reqs = [GenerationRequest(prompt=f"story {i}", max_tokens=16, sampling=SamplingParams(temperature=0.8, seed=i))
                for i in range(8)]
        return await asyncio.gather(*(collect(backend, r) for r in reqs))

    outs = run(many())
    assert all(chunks[-1].finish_reason in ("stop", "length") for _, chunks in outs)


def test_json_schema_grammar_with_random_weights(backend):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string", "maxLength": 6}},
              "required": ["n", "s"], "additionalProperties": False,
              # compact JSON: with random weights, flexible whitespace can use up every token
              "x-guidance": {"whitespace_flexible": False}}
    grammar = compile_constraints([JsonSchemaConstraint(param="response_format", schema=schema)])
    for seed in range(3):
        text, chunks = run(collect(backend, GenerationRequest(prompt="json:", max_tokens=600, grammar=grammar,
                                                              sampling=SamplingParams(temperature=0.8, seed=seed))))
        assert chunks[-1].finish_reason == "stop", text
        value = json.loads(text)
        assert set(value) == {"n", "s"}


def test_regex_and_stop_string(backend):
    grammar = compile_constraints([RegexConstraint(param="regex_pattern", pattern=r"(cat|dog) [0-9]{3}")])
    text, _ = run(collect(backend, GenerationRequest(prompt="x", max_tokens=32, grammar=grammar,
                                                     sampling=SamplingParams(temperature=1.0, seed=3))))
    assert re.fullmatch(r"(cat|dog) [0-9]{3}", text), text
    grammar = compile_constraints([RegexConstraint(param="regex_pattern", pattern=r"abc;def")])
    text, chunks = run(collect(backend, GenerationRequest(prompt="x", max_tokens=16, grammar=grammar, stop=[";"])))
    assert text == "abc" and chunks[-1].finish_reason == "stop"


def test_banned_strings(backend):
    for seed in range(3):
        text, _ = run(collect(backend, GenerationRequest(prompt="x", max_tokens=16, banned_strings=["e"],
                                                         sampling=SamplingParams(temperature=1.0, seed=seed))))
        assert "e" not in text.lower().rsplit(" ", 1)[0], text


def test_prompt_too_long_is_400_before_any_chunk(backend):
    with pytest.raises(InvalidRequestError):
        run(collect(backend, GenerationRequest(prompt="word " * 5000, max_tokens=4)))


def test_banned_strings_with_grammar_refused(backend):
    grammar = compile_constraints([RegexConstraint(param="regex_pattern", pattern=r"[a-z]+")])
    with pytest.raises(InvalidRequestError):
        run(collect(backend, GenerationRequest(prompt="x", max_tokens=4, grammar=grammar, banned_strings=["a"])))


def test_closing_the_stream_cancels_the_job(backend):
    async def leave_early():
        gen = backend.generate(GenerationRequest(prompt="go", max_tokens=800, sampling=SamplingParams(temperature=1)))
        n = 0
        async for _ in gen:
            n += 1
            if n == 3:
                break
        await gen.aclose()
        for _ in range(200):
            if backend.engine.active_jobs == 0 and not backend.generator.num_remaining_jobs():
                return True
            await asyncio.sleep(0.01)
        return False

    assert run(leave_early())
    text, chunks = run(collect(backend, GenerationRequest(prompt="again", max_tokens=4)))
    assert chunks[-1].finish_reason in ("stop", "length")


def test_draft_model_same_vocab(tiny_model):
    from gallama_exllama.backend import load_exllama
    from gallama_exllama.settings import ExLlamaSettings

    b = load_exllama(ExLlamaSettings(model_id=tiny_model, max_seq_len=512, cache_quant="Q4", draft_model_id=tiny_model,
                                     draft_cache_quant="Q8"), LoadProgress())
    try:
        text, chunks = run(collect(b, GenerationRequest(prompt="draft", max_tokens=20,
                                                        sampling=SamplingParams(temperature=0))))
        assert chunks[-1].finish_reason in ("stop", "length")
    finally:
        run(b.close())


def test_cache_quant_classes(tiny_model):
    from gallama_exllama.backend import _cache_class

    assert [_cache_class(q).__name__ for q in ("FP16", "Q8", "Q6", "Q4")] == [
        "ExLlamaV2Cache", "ExLlamaV2Cache_Q8", "ExLlamaV2Cache_Q6", "ExLlamaV2Cache_Q4"]
