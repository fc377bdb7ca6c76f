"""ExLlamaV3 plugin tests that need no GPU: registration, settings and cache mapping, lazy imports, the
clear CPU error, the numpy floor declared for install time, sampling, grammars and the engine-thread bridge."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import subprocess
import sys
import threading

import pytest
from pydantic import ValidationError

from gallama_core.models.backend import SamplingParams
from gallama_core.errors import GallamaError
from gallama_core.plugin_system.registrations import LoadProgress
from gallama_exllamav3.settings import CACHE_LAYERS, ExLlamaV3Settings


def test_listed_by_gallama_plugins():
    out = subprocess.run([sys.executable, "-c", "from gallama_core.cli import main; main()", "plugins"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "gallama-exllamav3" in out.stdout


def test_backend_registered():
    from gallama_core.models.registry import BackendRegistry
    from gallama_core.plugin_system.manager import create_plugin_manager

    registry = BackendRegistry(create_plugin_manager())
    assert registry.get("exllamav3").name == "exllamav3"
    assert registry.get("exl3").name == "exllamav3"


def test_settings_and_cache_mapping():
    s = ExLlamaV3Settings(model_id="/m", gpus="20,0,12", cache_quant="q6", cache_size=65536, tp=True)
    assert s.gpus == [20.0, 0.0, 12.0] and s.cache_quant == "Q6" and s.tp
    assert ExLlamaV3Settings(model_id="/m").cache_quant == "Q4"
    assert CACHE_LAYERS == {"FP16": ("fp16", 16, 16), "Q8": ("quant", 8, 8), "Q6": ("quant", 6, 6),
                            "Q4": ("quant", 4, 4)}
    with pytest.raises(ValidationError):
        ExLlamaV3Settings(model_id="/m", cache_quant="Q2")
    with pytest.raises(ValidationError):
        ExLlamaV3Settings(model_id="/m", paged=True)  # an ExLlamaV2 key: unknown here

def test_cpu_threads_cap_the_torch_pool_of_threads_started_later(monkeypatch):
    """The worker loads the model in one thread and steps the engine in another, started after the load: that one
    must see the cap too (measured: torch's default pool made the decode steps 2.9x slower beside busy cores)."""
    import torch

    from gallama_exllamav3.backend import require_cuda

    assert ExLlamaV3Settings(model_id="/m").cpu_threads == 1
    with pytest.raises(ValidationError):
        ExLlamaV3Settings(model_id="/m", cpu_threads=0)
    before = torch.get_num_threads()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        loader = threading.Thread(target=require_cuda, args=("exllamav3", 3))
        loader.start()
        loader.join()
        seen: list[int] = []
        engine = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        engine.start()
        engine.join()
        assert seen == [3]
    finally:
        torch.set_num_threads(before)


def test_numpy_floor_is_declared_for_install_time():
    """infinity-emb (gallama-embed) pins numpy 1.26; declaring exllamav3's floor makes pip/uv refuse the mix."""
    requires = importlib.metadata.requires("gallama-exllamav3") or []
    assert any(r.replace(" ", "").startswith("numpy>=2.1") for r in requires), requires
    import numpy

    assert tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= (2, 1)


def test_load_without_cuda_is_a_clear_error_and_imports_no_engine(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU error path cannot be exercised")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    from gallama_exllamav3.plugin import _load

    with pytest.raises(GallamaError, match="needs an NVIDIA GPU with CUDA"):
        _load(ExLlamaV3Settings(model_id=str(tmp_path)), LoadProgress())
    assert "exllamav3" not in sys.modules


def test_plugin_import_is_lazy():
    code = ("import sys, gallama_exllamav3.plugin, gallama_exllamav3.settings; "
            "print(any(m.split('.')[0] in ('torch', 'exllamav3') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_detect_claims_exl3_folders_only(tmp_path):
    from gallama_exllamav3.plugin import _detect

    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "exl3"}}))
    assert _detect(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({}))
    assert not _detect(str(tmp_path))


def test_sampler_kwargs():
    from gallama_exllamav3.backend import sampler_kwargs

    assert sampler_kwargs(SamplingParams()) == {}
    assert sampler_kwargs(SamplingParams(temperature=0)) == {"temperature": 0.0}
    assert sampler_kwargs(SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, presence_penalty=0.5,
                                         frequency_penalty=0.25, repetition_penalty=1.1)) == {
        "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "pres_p": 0.5, "freq_p": 0.25, "rep_p": 1.1}


def test_core_grammars_compile_for_an_llguidance_tokenizer(byte_tokenizer_dir):
    """The filter ExLlamaV3 builds (LLTokenizer from tokenizer.json + Lark grammar) accepts the core's grammars."""
    import llguidance

    from gallama_core.pipeline.constraints import JsonSchemaConstraint, RegexConstraint, compile_constraints

    tok = llguidance.LLTokenizer((byte_tokenizer_dir / "tokenizer.json").read_text(), eos_token=0)
    for c in (JsonSchemaConstraint(param="response_format", schema={"type": "object"}),
              RegexConstraint(param="regex_pattern", pattern="[0-9]+")):
        grammar = compile_constraints([c])
        assert not llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", grammar), tok)
        m = llguidance.LLMatcher(tok, llguidance.grammar_from("lark", grammar))
        assert not m.is_error() and not m.is_accepting()


class FakeGenerator:
    def __init__(self):
        self.jobs, self.cancelled, self.thread = [], [], None

    def enqueue(self, job):
        self.jobs.append(job)

    def cancel(self, job):
        self.jobs.remove(job)
        self.cancelled.append(job)

    def iterate(self):
        self.thread = threading.current_thread()
        out = []
        for job in list(self.jobs):
            job["i"] += 1
            eos = job["i"] >= job["n"]
            out.append({"job": job["id"], "stage": "streaming", "text": "x", "eos": eos})
            if eos:
                self.jobs.remove(job)
        return out


async def test_engine_loop_runs_off_the_event_loop_and_cancels():
    from gallama_core.models.engine_thread import EngineLoop

    class Job(dict):
        __hash__ = object.__hash__

    gen = FakeGenerator()
    # results name the job; make the job its own id
    loop_ = EngineLoop(gen, "fake")
    try:
        jobs = []
        for n in (3, 5, 10**9):  # the third never ends by itself: only the cancel stops it
            j = Job(n=n, i=0)
            j["id"] = j
            jobs.append((j, loop_.submit(j)))
        got = {}
        for j, sink in jobs[:2]:
            items = []
            while not items or not items[-1]["eos"]:
                items += await sink.take()
            got[j["n"]] = len(items)
        assert got == {3: 3, 5: 5}
        loop_.cancel(jobs[2][0])
        for _ in range(200):
            if gen.cancelled:
                break
            await asyncio.sleep(0.01)
        assert gen.cancelled == [jobs[2][0]] and gen.thread is not threading.current_thread()
    finally:
        loop_.close()


async def test_backend_generate_streams_and_cancels():
    """ExLlamaV3Backend.generate over a fake generator: chunks, final usage, cancel on early close."""
    from gallama_core.models.backend import GenerationRequest
    from gallama_exllamav3.backend import ExLlamaV3Backend
    from gallama_core.models.engine_thread import EngineLoop

    class Job(dict):
        __hash__ = object.__hash__

    def make_job(request):
        j = Job(n=request.max_tokens, i=0)
        j["id"] = j
        return j, 3

    gen = FakeGenerator()
    backend = object.__new__(ExLlamaV3Backend)
    backend.engine = EngineLoop(gen, "fake")
    backend.make_job = make_job
    try:
        chunks = [c async for c in backend.generate(GenerationRequest(prompt="p", max_tokens=4))]
        assert "".join(c.text for c in chunks) == "xxxx" and chunks[-1].finish_reason == "stop"
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


async def test_backend_generate_into_hands_steps_to_the_target():
    """The engine worker's way (generate_into): the same chunks, handed to the target on the engine thread, then
    None; a request that cannot run raises before anything starts."""
    from gallama_core.errors import InvalidRequestError
    from gallama_core.models.backend import GenerationRequest
    from gallama_exllamav3.backend import ExLlamaV3Backend
    from gallama_core.models.engine_thread import EngineLoop

    class Job(dict):
        __hash__ = object.__hash__

    def make_job(request):
        if request.max_tokens is None:
            raise InvalidRequestError("no room", code="context_length_exceeded")
        j = Job(n=request.max_tokens, i=0)
        j["id"] = j
        return j, 3

    class Target:
        def __init__(self):
            self.items, self.threads, self.ended = [], set(), threading.Event()

        def post(self, deliveries):
            self.threads.add(threading.current_thread())
            for key, item in deliveries:
                self.items.append((key, item))
                if item is None:
                    self.ended.set()

    gen = FakeGenerator()
    backend = object.__new__(ExLlamaV3Backend)
    backend.engine = EngineLoop(gen, "fake")
    backend.make_job = make_job
    target = Target()
    try:
        backend.generate_into(GenerationRequest(prompt="p", max_tokens=4), target, 9)
        assert await asyncio.to_thread(target.ended.wait, 10)
        chunks = [item for _, item in target.items[:-1]]
        assert "".join(c.text for c in chunks) == "xxxx" and chunks[-1].finish_reason == "stop"
        assert {key for key, _ in target.items} == {9} and target.threads == {gen.thread}
        with pytest.raises(InvalidRequestError):
            backend.generate_into(GenerationRequest(prompt="p"), target, 10)
    finally:
        backend.engine.close()


def test_eos_ids_from_config_tokenizer_and_generation_config(tmp_path):
    import json
    from types import SimpleNamespace

    from gallama_exllamav3.backend import eos_ids

    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 9}))
    loaded = SimpleNamespace(model_dir=tmp_path, config=SimpleNamespace(eos_token_id_list=[4, 2], eos_token_id=2),
                             tokenizer=SimpleNamespace(eos_token_id=5))
    assert eos_ids(loaded) == [4, 2, 5, 9]


def test_generator_batching_settings_ingest_waiting_prompts_at_once():
    """gallama's default lets every prompt that arrived while others generate in at the next step (ExLlamaV3's own
    default admits one every 5 steps: a burst of requests through HTTP trickled in over seconds)."""
    from gallama_exllamav3.backend import generator_kwargs

    class NewGenerator:
        def __init__(self, model, cache, tokenizer, max_batch_size=256, max_chunk_size=2048, shared_chunk_size=None,
                     prefill_cooldown=None, **other):
            pass

    class OldGenerator:
        def __init__(self, model, cache, tokenizer, max_batch_size=256, max_chunk_size=2048):
            pass

    s = ExLlamaV3Settings(model_id="/m", chunk_size=1024, max_batch_size=64)
    assert generator_kwargs(s, NewGenerator) == {"max_batch_size": 64, "max_chunk_size": 1024,
                                                 "prefill_cooldown": 0, "shared_chunk_size": 1024}
    tuned = ExLlamaV3Settings(model_id="/m", prefill_cooldown=4, shared_chunk_size=512)
    assert generator_kwargs(tuned, NewGenerator)["prefill_cooldown"] == 4
    assert generator_kwargs(tuned, NewGenerator)["shared_chunk_size"] == 512
    assert generator_kwargs(s, OldGenerator) == {"max_batch_size": 64, "max_chunk_size": 1024}
    with pytest.raises(ValidationError, match="shared_chunk_size"):
        ExLlamaV3Settings(model_id="/m", shared_chunk_size=300)
    with pytest.raises(ValidationError, match="shared_chunk_size"):
        ExLlamaV3Settings(model_id="/m", chunk_size=512, shared_chunk_size=1024)
