"""ExLlamaV2 plugin tests that need no GPU: registration, settings, lazy imports, the clear CPU error,
chat templates, sampling, the LLGuidance grammar masker and the engine-thread bridge."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading

import pytest
from pydantic import ValidationError

from gallama_core.models.backend import SamplingParams
from gallama_core.errors import GallamaError
from gallama_core.plugin_system.registrations import LoadProgress
from gallama_exllama.settings import ExLlamaSettings


def test_listed_by_gallama_plugins():
    out = subprocess.run([sys.executable, "-c", "from gallama_core.cli import main; main()", "plugins"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "gallama-exllama" in out.stdout


def test_backend_registered_with_aliases():
    from gallama_core.models.registry import BackendRegistry
    from gallama_core.plugin_system.manager import create_plugin_manager

    registry = BackendRegistry(create_plugin_manager())
    for name in ("exllama", "exllamav2", "EXL2"):
        assert registry.get(name).name == "exllama"
    assert registry.get("exllama").settings_model is ExLlamaSettings


def test_settings_validation():
    s = ExLlamaSettings(model_id="/m", gpus="20,15,0", cache_quant="q8", tp=True)
    assert s.gpus == [20.0, 15.0, 0.0] and s.cache_quant == "Q8" and s.tp
    assert ExLlamaSettings(model_id="/m").cache_quant == "Q4"  # gallama's documented default
    with pytest.raises(ValidationError):
        ExLlamaSettings(model_id="/m", cache_quant="Q3")
    with pytest.raises(ValidationError):
        ExLlamaSettings(model_id="/m", no_such_key=1)
    with pytest.raises(ValidationError):
        ExLlamaSettings(model_id="/m", attention="fast")


def test_cpu_threads_cap_the_torch_pool_of_threads_started_later(monkeypatch):
    """The worker loads the model in one thread and steps the engine in another, started after the load: that one
    must see the cap too (measured: torch's default pool made the decode steps 2.9x slower beside busy cores)."""
    import torch

    from gallama_exllama.backend import require_cuda

    assert ExLlamaSettings(model_id="/m").cpu_threads == 1
    with pytest.raises(ValidationError):
        ExLlamaSettings(model_id="/m", cpu_threads=0)
    before = torch.get_num_threads()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        loader = threading.Thread(target=require_cuda, args=("exllama", 3))
        loader.start()
        loader.join()
        seen: list[int] = []
        engine = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        engine.start()
        engine.join()
        assert seen == [3]
    finally:
        torch.set_num_threads(before)


def test_load_without_cuda_is_a_clear_error_and_imports_no_engine(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU error path cannot be exercised")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    from gallama_exllama.plugin import _load

    with pytest.raises(GallamaError, match="needs an NVIDIA GPU with CUDA") as err:
        _load(ExLlamaSettings(model_id=str(tmp_path)), LoadProgress())
    assert "llama_cpp" in str(err.value)
    assert "exllamav2" not in sys.modules  # the engine (and its JIT build) was never touched


def test_plugin_import_is_lazy():
    code = ("import sys, gallama_exllama.plugin, gallama_exllama.settings; "
            "print(any(m.split('.')[0] in ('torch', 'exllamav2') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_detect_claims_exl2_folders_only(tmp_path):
    from gallama_exllama.plugin import _detect

    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "exl2"}}))
    assert _detect(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "exl3"}}))
    assert not _detect(str(tmp_path))
    assert not _detect(str(tmp_path / "missing"))


def test_chat_template_from_tokenizer_config(tmp_path):
    from gallama_core.models.hf_model_dir import chat_template_from_dir

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": True,
        "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"}))
    t = chat_template_from_dir(tmp_path, engine_adds_bos=True)
    assert (t.bos_token, t.eos_token) == ("<s>", "</s>")
    assert t.render([{"role": "user", "content": "hi"}]) == "[user]hi"  # engine adds BOS itself
    # newer exports keep the template in chat_template.jinja
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}<{{ m['content'] }}>{% endfor %}")
    assert chat_template_from_dir(tmp_path, False).render([{"role": "user", "content": "x"}]) == "<x>"


def test_sampling_mapping():
    from gallama_exllama.sampling import sampler_attributes

    greedy = sampler_attributes(SamplingParams(temperature=0, top_p=0.5))
    assert greedy["top_k"] == 1 and greedy["token_repetition_penalty"] == 1.0 and greedy["top_p"] == 1.0
    full = sampler_attributes(SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, presence_penalty=0.5,
                                             frequency_penalty=0.25, repetition_penalty=1.1))
    assert full == {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "token_presence_penalty": 0.5,
                    "token_frequency_penalty": 0.25, "token_repetition_penalty": 1.1}


# ------------------------------------------------------------------------------------------ grammar


def _walk(masker, tokenizer, seed: int, steps: int = 400) -> tuple[str, bool]:
    """Sample with random logits under the mask until EOS; return (text, ended with EOS)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        masker.compute()
        logits = torch.randn(masker.logits_size, generator=g)
        masker.apply(logits)
        assert torch.isfinite(logits).any()
        token = int(torch.distributions.Categorical(logits=logits).sample())
        if token == tokenizer.eos_token:
            assert masker.accepting, "EOS was allowed where the grammar does not accept"
            return tokenizer.decode_str(out), True
        out.append(token)
        masker.consume(token)
    return tokenizer.decode_str(out), False


def test_grammar_json_schema_with_random_logits(byte_tokenizer_dir):
    from gallama_core.pipeline.constraints import JsonSchemaConstraint, compile_constraints
    from gallama_exllama.grammar import GrammarMasker, ll_tokenizer_for_dir

    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}},
              "required": ["a", "b"], "additionalProperties": False}
    grammar = compile_constraints([JsonSchemaConstraint(param="response_format", schema=schema)])
    tok = ll_tokenizer_for_dir(byte_tokenizer_dir, [0])
    padded = (tok.vocab_size + 31) // 32 * 32 + 32  # the engine's logits are wider than the tokenizer
    for seed in range(5):
        masker = GrammarMasker(tok, grammar, padded)
        text, ended = _walk(masker, tok, seed)
        if ended:
            value = json.loads(text)
            assert set(value) == {"a", "b"} and isinstance(value["a"], int) and value["b"] in ("x", "y")
        # padding logits are never allowed
        assert not masker.compute()[tok.vocab_size:].any()


def test_grammar_regex_and_stop_at_completion(byte_tokenizer_dir):
    from gallama_core.pipeline.constraints import RegexConstraint, compile_constraints
    from gallama_exllama.grammar import GrammarMasker, ll_tokenizer_for_dir

    grammar = compile_constraints([RegexConstraint(param="regex_pattern", pattern=r"(yes|no)-[0-9]{3}")])
    tok = ll_tokenizer_for_dir(byte_tokenizer_dir, [0])
    for seed in range(5):
        masker = GrammarMasker(tok, grammar, tok.vocab_size)
        text, ended = _walk(masker, tok, seed)
        assert ended and re.fullmatch(r"(yes|no)-[0-9]{3}", text), text
    # once complete, only EOS is allowed: the job stops at grammar completion
    masker = GrammarMasker(tok, grammar, tok.vocab_size)
    for t in tok.tokenize_str("no-123"):
        masker.consume(t)
    assert masker.compute().nonzero().flatten().tolist() == [tok.eos_token]


def test_grammar_error_is_value_error(byte_tokenizer_dir):
    from gallama_exllama.grammar import GrammarMasker, ll_tokenizer_for_dir

    tok = ll_tokenizer_for_dir(byte_tokenizer_dir, [0])
    with pytest.raises(Exception):
        GrammarMasker(tok, "start: nosuchrule", tok.vocab_size)


# ------------------------------------------------------------------------------------ engine thread


class FakeJob:
    def __init__(self, n: int, fail: bool = False):
        self.n, self.i, self.fail = n, 0, fail


class FakeGenerator:
    """enqueue / cancel / iterate like ExLlama's generators: one token of text per job per iteration."""

    def __init__(self):
        self.jobs: list[FakeJob] = []
        self.cancelled: list[FakeJob] = []
        self.thread = None

    def enqueue(self, job):
        if job.n < 0:
            raise ValueError("job too long for the cache")
        self.jobs.append(job)

    def cancel(self, job):
        self.jobs.remove(job)
        self.cancelled.append(job)

    def iterate(self):
        self.thread = threading.current_thread()
        out = []
        for job in list(self.jobs):
            if job.fail:
                raise RuntimeError("CUDA error: boom")
            job.i += 1
            eos = job.i >= job.n
            out.append({"job": job, "stage": "streaming", "text": f"t{job.i} ", "eos": eos,
                        **({"eos_reason": "max_new_tokens", "new_tokens": job.i} if eos else {})})
            if eos:
                self.jobs.remove(job)
        return out


async def _consume(loop_, job, limit=None):
    from gallama_core.models.engine_thread import ENGINE_GONE

    sink = loop_.submit(job)
    texts = []
    while True:
        for item in await sink.take():
            if item is ENGINE_GONE or isinstance(item, BaseException):
                return texts, item
            texts.append(item["text"])
            if item["eos"]:
                return texts, None
            if limit and len(texts) >= limit:
                loop_.cancel(job)
                return texts, "cancelled"


async def test_engine_loop_batches_jobs_cancels_and_fails_cleanly():
    from gallama_core.models.engine_thread import EngineLoop

    gen = FakeGenerator()
    loop_ = EngineLoop(gen, "fake")
    try:
        results = await asyncio.gather(*(_consume(loop_, FakeJob(5 + i)) for i in range(16)))
        assert [len(t) for t, _ in results] == [5 + i for i in range(16)]
        assert gen.thread is not threading.current_thread()  # iterate() ran off the event loop
        # a consumer that leaves early gets its job cancelled
        long_job = FakeJob(10_000)
        texts, how = await _consume(loop_, long_job, limit=3)
        assert how == "cancelled"
        for _ in range(200):
            if long_job in gen.cancelled:
                break
            await asyncio.sleep(0.01)
        assert long_job in gen.cancelled and loop_.active_jobs == 0
        # a refused job gets the engine's error, the loop keeps serving
        _, err = await _consume(loop_, FakeJob(-1))
        assert isinstance(err, ValueError)
        assert len((await _consume(loop_, FakeJob(2)))[0]) == 2
        # a generator failure reaches every consumer, and later jobs are refused
        _, err = await _consume(loop_, FakeJob(3, fail=True))
        assert isinstance(err, RuntimeError)
        with pytest.raises(RuntimeError, match="not running"):
            loop_.submit(FakeJob(1))
    finally:
        loop_.close()


async def test_backend_generate_streams_coalesces_and_cancels():
    """ExLlamaBackend.generate over a fake generator: chunks, final usage, cancel on early close."""
    from gallama_core.models.backend import GenerationRequest
    from gallama_exllama.backend import ExLlamaBackend
    from gallama_core.models.engine_thread import EngineLoop

    gen = FakeGenerator()
    backend = object.__new__(ExLlamaBackend)
    backend.engine = EngineLoop(gen, "fake")
    backend.make_job = lambda request: (FakeJob(request.max_tokens), 7)
    try:
        chunks = [c async for c in backend.generate(GenerationRequest(prompt="p", max_tokens=5))]
        assert "".join(c.text for c in chunks) == "t1 t2 t3 t4 t5 "
        assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 5
        assert chunks[-1].prompt_tokens == 7
        stream = backend.generate(GenerationRequest(prompt="p", max_tokens=100_000))
        await stream.__anext__()
        await stream.aclose()
        for _ in range(200):
            if gen.cancelled:
                break
            await asyncio.sleep(0.01)
        assert len(gen.cancelled) == 1
    finally:
        backend.engine.close()


def test_eos_ids_from_config_tokenizer_and_generation_config(tmp_path):
    import json
    from types import SimpleNamespace

    from gallama_exllama.backend import eos_ids

    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 9]}))
    loaded = SimpleNamespace(model_dir=tmp_path, config=SimpleNamespace(eos_token_id=2),
                             tokenizer=SimpleNamespace(eos_token_id=5))
    assert eos_ids(loaded) == [2, 5, 9]
