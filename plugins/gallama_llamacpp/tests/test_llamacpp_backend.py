"""The llama.cpp plugin: GGUF metadata, settings to engine parameters, request mapping, the real engine."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gallama_core.models.backend import GenerationChunk, GenerationRequest, SamplingParams
from gallama_core.errors import InvalidRequestError
from gallama_core.plugin_system.registrations import LoadProgress
from gallama_core.testing import smollm2_gguf
from gallama_llamacpp.backend import _template_from_metadata, build_params, load_llamacpp, request_body
from gallama_llamacpp.gguf_metadata import read_gguf_metadata
from gallama_llamacpp.plugin import _detect
from gallama_llamacpp.settings import LlamaCppSettings


@pytest.fixture(scope="module")
def gguf():
    return smollm2_gguf()


@pytest.fixture(scope="module")
def meta(gguf):
    return read_gguf_metadata(gguf)


def test_metadata_and_template(meta):
    assert meta["general.architecture"] == "llama" and meta["llama.context_length"] == 8192
    template = _template_from_metadata(meta)
    assert template.bos_token == "<|im_start|>" and template.eos_token == "<|im_end|>"
    prompt = template.render([{"role": "user", "content": "Hi"}])
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_not_a_gguf(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a GGUF"):
        read_gguf_metadata(str(path))


def test_detect():
    assert _detect("/m/Model.Q4_K_M.GGUF") and not _detect("/m/exl2-folder")


def test_params_from_settings(gguf, meta):
    import xllamacpp as xlc

    params, seq = build_params(LlamaCppSettings(model_id=gguf, n_parallel=3, max_seq_len=512, cache_quant="Q8",
                                                n_threads=1), meta)
    assert (params.n_ctx, params.n_parallel, seq) == (1536, 3, 512)
    assert params.cache_type_k == xlc.ggml_type.GGML_TYPE_Q8_0 and params.cache_type_v == xlc.ggml_type.GGML_TYPE_Q8_0
    assert params.cpuparams.n_threads == 1
    params, seq = build_params(LlamaCppSettings(model_id=gguf, n_parallel=4, cache_size=4096), meta)
    assert (params.n_ctx, seq) == (4096, 1024)
    params, seq = build_params(LlamaCppSettings(model_id=gguf), meta)
    assert seq == 4096 and params.n_parallel == 4  # the model's 8192 capped at the default


def test_settings_reject_unknown_and_bad_keys():
    with pytest.raises(ValueError, match="n_parallel"):
        LlamaCppSettings(model_id="x", n_parallel=0)
    with pytest.raises(ValueError, match="colour"):
        LlamaCppSettings(model_id="x", colour="red")


def test_request_body_mapping():
    request = GenerationRequest(prompt="p", max_tokens=7, stop=["END"], grammar="start: /a+/",
                                sampling=SamplingParams(temperature=0.2, top_k=3, seed=9, repetition_penalty=1.1))
    body = request_body(request)
    assert body["prompt"] == "p" and body["max_tokens"] == 7 and body["stop"] == ["END"] and body["stream"]
    assert body["grammar"] == "%llguidance {}\nstart: /a+/"
    assert (body["temperature"], body["top_k"], body["seed"], body["repeat_penalty"]) == (0.2, 3, 9, 1.1)
    assert "top_p" not in body  # unset fields keep the engine's defaults
    assert request_body(GenerationRequest(prompt="p"))["max_tokens"] == -1


def test_missing_file_is_clear():
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        load_llamacpp(LlamaCppSettings(model_id="/no/such.gguf"), LoadProgress())


@pytest.fixture(scope="module")
def backend(gguf):
    messages = []
    instance = load_llamacpp(LlamaCppSettings(model_id=gguf, model_name="t", n_parallel=2, max_seq_len=128),
                             LoadProgress(lambda m, f: messages.append(m)))
    assert messages[-1] == "ready"
    yield instance
    asyncio.run(instance.close())


async def _collect(backend, request):
    return [chunk async for chunk in backend.generate(request)]


def test_generate_streams_and_counts(backend):
    prompt = backend.chat_template.render([{"role": "user", "content": "Count to five."}])
    chunks = asyncio.run(_collect(backend, GenerationRequest(prompt=prompt, max_tokens=6,
                                                             sampling=SamplingParams(temperature=0))))
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 6
    assert chunks[-1].prompt_tokens > 5
    assert "".join(c.text for c in chunks).strip()


def test_grammar_is_enforced(backend):
    prompt = backend.chat_template.render([{"role": "user", "content": "Say something."}])
    chunks = asyncio.run(_collect(backend, GenerationRequest(prompt=prompt, max_tokens=20, grammar='start: "x" /[0-9]{3}/')))
    text = "".join(c.text for c in chunks)
    assert len(text) == 4 and text[0] == "x" and text[1:].isdigit()
    assert chunks[-1].finish_reason == "stop"


def test_too_long_prompt_is_400_before_output(backend):
    with pytest.raises(InvalidRequestError) as info:
        asyncio.run(_collect(backend, GenerationRequest(prompt="word " * 400, max_tokens=4)))
    assert info.value.code == "context_length_exceeded"


def test_closing_early_cancels(backend):
    async def take_two():
        stream = backend.generate(GenerationRequest(prompt="Once upon a time", max_tokens=100))
        got = [await anext(stream), await anext(stream)]
        await stream.aclose()
        # the slot is free again: two full requests still run on a 2-slot server
        rest = await asyncio.gather(_collect(backend, GenerationRequest(prompt="a", max_tokens=3)),
                                    _collect(backend, GenerationRequest(prompt="b", max_tokens=3)))
        return got, rest

    got, rest = asyncio.run(take_two())
    assert len(got) == 2 and all(r[-1].completion_tokens == 3 for r in rest)


def _listening_tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        inodes |= {line.split()[9] for line in lines if line.split()[3] == "0A"}
    return inodes


def test_the_engines_own_http_server_listens_on_no_tcp_port(backend):
    """xllamacpp's embedded llama.cpp HTTP server: a Unix socket in a private folder, a random key, no optional
    endpoints (issue: a second, undocumented HTTP server per model)."""
    import os
    import stat

    own = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used
            continue
        if target.startswith("socket:"):
            own.add(target[8:-1])
    assert own and not own & _listening_tcp_inodes()
    folder = backend.socket_folder
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert os.listdir(folder) == ["engine.sock"]
    assert backend._server.listening_address == f"unix://{folder}/engine.sock"


def test_logprobs_mapping():
    from gallama_llamacpp.backend import _logprobs

    assert "logprobs" not in request_body(GenerationRequest(prompt="p"))
    assert request_body(GenerationRequest(prompt="p", logprobs=0))["logprobs"] == 1
    assert request_body(GenerationRequest(prompt="p", logprobs=5))["logprobs"] == 5
    engine = {"logprobs": {"content": [{"id": 7, "token": "a", "bytes": [97], "logprob": -0.5, "top_logprobs": [
        {"id": 7, "token": "a", "bytes": [97], "logprob": -0.5}, {"id": 8, "token": "b", "bytes": [98], "logprob": -1}]}]}}
    assert _logprobs(engine, 1) == [{"token": "a", "logprob": -0.5, "bytes": [97],
                                     "top_logprobs": [{"token": "a", "logprob": -0.5, "bytes": [97]}]}]
    assert _logprobs(engine, 0)[0]["top_logprobs"] == [] and _logprobs(engine, None) is None


async def test_generate_returns_logprobs(backend):
    chunks = [c async for c in backend.generate(GenerationRequest(prompt="Hello", max_tokens=4, logprobs=2,
                                                                  sampling=SamplingParams(temperature=0)))]
    entries = [e for c in chunks for e in (c.logprobs or [])]
    assert len(entries) == 4 and "".join(e["token"] for e in entries) == "".join(c.text for c in chunks)
    assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in entries)


class Collected:
    """A ``generate_into`` target: what the pool thread posts, and on which threads."""

    def __init__(self):
        self.items, self.threads, self.done = [], set(), threading.Event()

    def post(self, deliveries):
        self.threads.add(threading.get_ident())
        for _, item in deliveries:
            self.items.append(item)
            if item is None or isinstance(item, Exception):
                self.done.set()


def test_generate_into_posts_the_same_chunks_from_the_pool_thread(backend):
    """The engine worker's way: the chunks of ``generate``, posted from the thread running the request, then one
    end (no event loop involved)."""
    prompt = backend.chat_template.render([{"role": "user", "content": "Count to five."}])
    request = GenerationRequest(prompt=prompt, max_tokens=6, sampling=SamplingParams(temperature=0))
    expected = asyncio.run(_collect(backend, request))
    target = Collected()
    backend.generate_into(request, target, "k")
    assert target.done.wait(60)
    *chunks, end = target.items
    assert end is None and all(isinstance(c, GenerationChunk) for c in chunks)
    assert "".join(c.text for c in chunks) == "".join(c.text for c in expected)
    assert chunks[-1].completion_tokens == 6 and chunks[-1].prompt_tokens == expected[-1].prompt_tokens
    assert threading.get_ident() not in target.threads


def test_generate_into_reports_a_refused_prompt_and_stops_after_cancel(backend):
    target = Collected()
    backend.generate_into(GenerationRequest(prompt="word " * 400, max_tokens=4), target, "k")
    assert target.done.wait(60)
    assert len(target.items) == 1 and isinstance(target.items[0], InvalidRequestError)
    assert target.items[0].code == "context_length_exceeded"

    target = Collected()
    cancel = backend.generate_into(GenerationRequest(prompt="Once upon a time", max_tokens=100), target, "k")
    for _ in range(600):
        if target.items:
            break
        time.sleep(0.01)
    cancel()
    count = len(target.items)
    time.sleep(0.3)
    assert 0 < count == len(target.items) and not target.done.is_set()  # nothing after cancel, not even the end
    # the slot is free again: two full requests still run on a 2-slot server
    rest = asyncio.run(_both(backend))
    assert all(r[-1].completion_tokens == 3 for r in rest)


async def _both(backend):
    return await asyncio.gather(_collect(backend, GenerationRequest(prompt="a", max_tokens=3)),
                                _collect(backend, GenerationRequest(prompt="b", max_tokens=3)))
