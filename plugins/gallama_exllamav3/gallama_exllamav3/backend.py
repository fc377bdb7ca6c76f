"""The ExLlamaV3 backend: EXL3 / unquantized models, ExLlamaV3's paged generator driven from one engine thread.

ExLlamaV3 ships its own paged attention kernels, so concurrent requests are batched without flash-attn.
Grammars (tool calls, JSON schema, regex: one LLGuidance Lark grammar per request from the core) go through
ExLlamaV3's built-in ``LLGuidanceFilter`` with ``eos_after_completed``: the whole output matches the grammar,
EOS only where the grammar accepts, and the job ends when the grammar is complete.

ExLlamaV3's ``AsyncGenerator`` runs ``iterate()`` on the event loop, which would stall the HTTP server for
every forward pass; :class:`~gallama_exllamav3.engine_loop.EngineLoop` runs the synchronous ``Generator`` in
its own thread instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator

from gallama_core.models.backend import Backend, GenerationChunk, GenerationRequest, SamplingParams
from gallama_core.errors import GallamaError, InvalidRequestError
from gallama_core.plugin_system.registrations import LoadProgress

from gallama_core.models.engine_thread import EngineLoop
from gallama_core.models.hf_model_dir import chat_template_from_dir, check_model_dir, eos_token_ids, read_json, wants_bos
from .settings import CACHE_LAYERS, ExLlamaV3Settings

log = logging.getLogger("gallama.exllamav3")

PAGE = 256
DEFAULT_MAX_SEQ_LEN = 4096


def require_cuda(backend: str = "exllamav3", cpu_threads: int | None = None) -> Any:
    """Import torch and make sure CUDA is there, with an error a user can act on. ``cpu_threads`` caps torch's CPU
    pool for this process and every thread it starts later (the settings' ``cpu_threads``: the engine thread,
    started after the load, steps with it)."""
    try:
        import torch
    except ImportError:
        raise GallamaError(f"the {backend} backend needs PyTorch with CUDA: install a CUDA build of torch "
                           "first (https://pytorch.org/get-started/locally/), then the model loads") from None
    if not torch.cuda.is_available():
        cuda = torch.version.cuda or "none (a CPU-only build)"
        raise GallamaError(f"the {backend} backend needs an NVIDIA GPU with CUDA, and this machine has none "
                           f"(torch {torch.__version__}, CUDA {cuda}, torch.cuda.is_available() is False). "
                           "On a CPU-only machine serve a GGUF model with the llama_cpp backend instead.")
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    return torch


def sampler_kwargs(s: SamplingParams) -> dict[str, Any]:
    """OpenAI sampling → ``ComboSampler`` arguments (temperature 0 = argmax; unset = no penalty/no cut)."""
    out: dict[str, Any] = {}
    if s.temperature is not None:
        out["temperature"] = max(float(s.temperature), 0.0)
    if s.top_p is not None:
        out["top_p"] = float(s.top_p)
    if s.top_k is not None:
        out["top_k"] = max(int(s.top_k), 0)
    if s.min_p is not None:
        out["min_p"] = float(s.min_p)
    if s.presence_penalty is not None:
        out["pres_p"] = float(s.presence_penalty)
    if s.frequency_penalty is not None:
        out["freq_p"] = float(s.frequency_penalty)
    if s.repetition_penalty is not None:
        out["rep_p"] = float(s.repetition_penalty)
    return out


def cache_layer_args(quant: str | None) -> dict[str, Any]:
    """``Cache(...)`` keyword arguments for a ``cache_quant`` value."""
    from exllamav3 import CacheLayer_fp16, CacheLayer_quant

    kind, k_bits, v_bits = CACHE_LAYERS[quant or "FP16"]
    if kind == "fp16":
        return {"layer_type": CacheLayer_fp16}
    return {"layer_type": CacheLayer_quant, "k_bits": k_bits, "v_bits": v_bits}


def _round_page(n: int) -> int:
    return max(PAGE, (n + PAGE - 1) // PAGE * PAGE)


class Loaded:
    def __init__(self, config, model, cache, tokenizer, model_dir: Path, max_seq_len: int):
        self.config, self.model, self.cache, self.tokenizer = config, model, cache, tokenizer
        self.model_dir, self.max_seq_len = model_dir, max_seq_len


def load_model(model_dir: str, *, max_seq_len: int | None, cache_size: int | None, cache_quant: str | None,
               gpus: list[float] | None, tp: bool, chunk_size: int, max_batch_size: int,
               progress: LoadProgress | None = None, what: str = "model") -> Loaded:
    from exllamav3 import Cache, Config, Model, Tokenizer

    path = check_model_dir(model_dir)
    config = Config.from_directory(str(path))
    trained = read_json(path / "config.json").get("max_position_embeddings")
    seq_len = max_seq_len or int(trained or DEFAULT_MAX_SEQ_LEN)
    model = Model.from_config(config)
    # at least one prompt chunk: ExLlamaV3 measures the split with a (1, max_chunk_size) batch through the cache
    cache = Cache(model, max_num_tokens=_round_page(max(cache_size or seq_len, seq_len, chunk_size)),
                  **cache_layer_args(cache_quant))

    def callback(done: int, total: int) -> None:
        if progress is not None and total and (done == total or done % max(1, total // 10) == 0):
            progress.update(f"loading {what} ({done}/{total} modules)", 0.1 + 0.7 * done / total)

    kwargs: dict[str, Any] = {"callback": callback, "max_chunk_size": chunk_size, "max_batch_size": max_batch_size}
    if gpus:
        kwargs["use_per_device"] = [float(g) for g in gpus]
    if tp:
        kwargs["tensor_p"] = True
    model.load(**kwargs)
    tokenizer = Tokenizer.from_config(config)
    return Loaded(config, model, cache, tokenizer, path, seq_len)


def generator_kwargs(settings: ExLlamaV3Settings, generator_cls) -> dict:
    """Batching settings for ExLlamaV3's ``Generator``.

    ExLlamaV3 ingests the prompt of a job that arrives while others generate in turns: one such job per pass,
    every ``prefill_cooldown + 1`` steps (default 4). Requests reach a server one by one, so a burst of 64 became
    64 turns: on an H200 (1.2B model, 64 streams through HTTP) the last stream's first token came after 6.5 s
    and throughput fell to 0.46x the raw generator, which had all 64 prompts at once. gallama's default
    (cooldown 0, full chunks) ingests every waiting prompt in the next step. Versions of ExLlamaV3 without these
    arguments keep their own behaviour."""
    kwargs = {"max_batch_size": settings.max_batch_size, "max_chunk_size": settings.chunk_size}
    accepted = inspect.signature(generator_cls.__init__).parameters
    if "prefill_cooldown" in accepted:
        kwargs["prefill_cooldown"] = settings.prefill_cooldown
    if "shared_chunk_size" in accepted:
        kwargs["shared_chunk_size"] = settings.shared_chunk_size or settings.chunk_size
    return kwargs


def load_exllamav3(settings: ExLlamaV3Settings, progress: LoadProgress) -> "ExLlamaV3Backend":
    torch = require_cuda("exllamav3", settings.cpu_threads)
    check_model_dir(settings.model_id)
    progress.update("importing ExLlamaV3 (the first use builds its CUDA extension, ~4 min)", 0.02)
    from exllamav3 import Generator

    t0 = time.perf_counter()
    main = load_model(settings.model_id, max_seq_len=settings.max_seq_len, cache_size=settings.cache_size,
                      cache_quant=settings.cache_quant, gpus=settings.gpus, tp=settings.tp,
                      chunk_size=settings.chunk_size, max_batch_size=settings.max_batch_size, progress=progress)
    draft = None
    if settings.draft_model_id:
        progress.update("loading the draft model", 0.8)
        draft = load_model(settings.draft_model_id, max_seq_len=main.max_seq_len,
                           cache_size=settings.draft_cache_size or main.cache.max_num_tokens,
                           cache_quant=settings.draft_cache_quant or settings.cache_quant, gpus=settings.draft_gpus,
                           tp=False, chunk_size=settings.chunk_size, max_batch_size=settings.max_batch_size,
                           progress=progress, what="draft model")
        check_same_vocab(main, draft)
    generator = Generator(model=main.model, cache=main.cache, tokenizer=main.tokenizer,
                          draft_model=draft.model if draft else None, draft_cache=draft.cache if draft else None,
                          num_draft_tokens=settings.num_draft_tokens if draft else None,
                          **generator_kwargs(settings, Generator))
    progress.update("warming up (kernel compilation and autotuning)", 0.9)
    try:  # first-use costs (Triton compilation, GEMM autotuning) before the first request rather than during it
        main.model.warmup(cache=main.cache, max_chunk_size=settings.chunk_size,
                          max_batch_size=min(settings.max_batch_size, 32))
    except Exception as exc:  # an optimisation only
        log.warning("ExLlamaV3 warm-up failed (first requests will be slower): %s", exc)
    torch.cuda.synchronize()
    log.info("ExLlamaV3 model %s loaded in %.1fs (cache %d tokens, %s)", settings.served_name,
             time.perf_counter() - t0, main.cache.max_num_tokens, settings.cache_quant or "FP16")
    progress.update("ready", 1.0)
    return ExLlamaV3Backend(settings, main, draft, generator)


def check_same_vocab(main: Loaded, draft: Loaded) -> None:
    a = main.tokenizer.get_id_to_piece_list(True)
    b = draft.tokenizer.get_id_to_piece_list(True)
    if len(a) != len(b) or list(a) != list(b):
        raise GallamaError(f"the draft model {draft.model_dir} has a different vocabulary from the model "
                           f"{main.model_dir} ({len(b)} vs {len(a)} tokens); speculative decoding needs the same "
                           "tokenizer")


def eos_ids(loaded: Loaded) -> list[int]:
    cfg = loaded.config
    return eos_token_ids(loaded.model_dir, getattr(cfg, "eos_token_id_list", None), getattr(cfg, "eos_token_id", None),
                         loaded.tokenizer.eos_token_id)


class ExLlamaV3Backend(Backend):
    def __init__(self, settings: ExLlamaV3Settings, main: Loaded, draft: Loaded | None, generator):
        self.add_bos = wants_bos(main.model_dir)
        super().__init__("exllamav3", settings.served_name, main.max_seq_len,
                         chat_template_from_dir(main.model_dir, engine_adds_bos=self.add_bos))
        self.settings = settings
        self.main, self.draft = main, draft
        self.generator = generator
        self.tokenizer = main.tokenizer
        self.stop_ids = eos_ids(main)
        #: Benchmarks set this False to generate exactly max_tokens (EOS ignored), as the raw side does.
        self.stop_on_eos = True
        self.engine = EngineLoop(generator, settings.served_name)
        self.concurrency = settings.max_batch_size

    def engine_stats(self) -> dict[str, float]:
        return self.engine.stats()

    def info(self) -> dict:
        return {"max_seq_len": self.max_seq_len, "cache_tokens": self.main.cache.max_num_tokens,
                "cache_quant": self.settings.cache_quant, "max_batch_size": self.settings.max_batch_size,
                "draft_model": self.settings.draft_model_id}

    def encode(self, text: str):
        return self.tokenizer.encode(text, add_bos=self.add_bos, encode_special_tokens=True)

    def grammar_filter(self, grammar: str):
        from exllamav3 import LLGuidanceFilter

        try:
            return LLGuidanceFilter(self.tokenizer, lark_grammar=grammar, eos_after_completed=True)
        except (ValueError, AssertionError) as exc:
            raise InvalidRequestError(f"grammar: {exc}", param="response_format") from None

    def make_job(self, request: GenerationRequest):
        from exllamav3 import ComboSampler, Job

        ids = self.encode(request.prompt)
        prompt_len = ids.shape[-1]
        room = self.max_seq_len - prompt_len
        if room <= 0:
            raise InvalidRequestError(f"the prompt is {prompt_len} tokens; this model's context is "
                                      f"{self.max_seq_len} tokens (max_seq_len)", param="messages",
                                      code="context_length_exceeded")
        max_new = min(request.max_tokens, room) if request.max_tokens else room
        stops: list = list(self.stop_ids) if self.stop_on_eos else []
        stops += [s for s in request.stop if s]
        filters = [self.grammar_filter(request.grammar)] if request.grammar else None
        # A job reserves cache pages for prompt + max_rq_tokens (or + max_new_tokens when that is None): only
        # long answers are split into rounds, short ones reserve what they need (measured: max_rq_tokens=2048
        # on 128-token jobs left 10.8 of 32 jobs per step and 0.40x the raw generator's throughput).
        rq = self.settings.max_rq_tokens if self.settings.max_rq_tokens and max_new > self.settings.max_rq_tokens \
            else None
        job = Job(input_ids=ids, max_new_tokens=max_new, sampler=ComboSampler(**sampler_kwargs(request.sampling)),
                  seed=request.sampling.seed, stop_conditions=stops, filters=filters,
                  banned_strings=request.banned_strings or None, identifier=request.request_id,
                  decode_special_tokens=False, max_rq_tokens=rq)
        return job, prompt_len

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        job, prompt_len = self.make_job(request)  # raises (400) before the first chunk
        async for chunk in self.engine.stream(job, prompt_len, "ExLlamaV3"):
            yield chunk

    def generate_into(self, request: GenerationRequest, target, key):
        """The engine worker's way: chunks handed over on the engine thread (see ``Backend.generate_into``)."""
        job, prompt_len = self.make_job(request)  # raises (400) before anything starts
        return self.engine.start(job, prompt_len, "ExLlamaV3", target, key)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)
        try:
            self.generator.close()
        except Exception:
            pass
        for loaded in (self.draft, self.main):
            if loaded is not None:
                try:
                    loaded.model.unload()
                except Exception:
                    pass
        self.generator = None
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:
            pass
