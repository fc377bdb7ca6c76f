"""The ExLlamaV2 backend: EXL2 / FP16 models, the dynamic generator driven from one engine thread.

Loading: ``ExLlamaV2Config`` → model (manual ``gpus`` split, autosplit, or ``tp``) → cache of the class that
``cache_quant`` names → tokenizer → an attention-path self-check (below) → ``ExLlamaV2DynamicGenerator``
(paged with flash-attn ≥ 2.5.7, which batches concurrent jobs; unpaged otherwise, one job at a time) →
:class:`~gallama_exllama.engine_loop.EngineLoop`.

The self-check: ExLlamaV2 0.3.2's torch-SDPA attention path returns wrong logits with recent torch
(relative error ~1 against transformers on the same weights). Before serving, the chosen attention path
(flash-attn or matmul) is compared with the plain matmul attention on a random prompt, both as one prefill
without a cache and as prefill plus single-token decode steps through a cache; a path that disagrees is not
used, and when none agrees the load fails. Wrong logits are never served silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator

from gallama_core.models.backend import Backend, GenerationChunk, GenerationRequest
from gallama_core.errors import GallamaError, InvalidRequestError
from gallama_core.plugin_system.registrations import LoadProgress

from gallama_core.models.engine_thread import EngineLoop
from gallama_core.models.hf_model_dir import chat_template_from_dir, check_model_dir, eos_token_ids, wants_bos
from .sampling import sampler_attributes
from .settings import ExLlamaSettings

log = logging.getLogger("gallama.exllama")

PAGE = 256  # ExLlamaV2's page size: cache sizes are multiples of it
CHECK_TOLERANCE = 2e-2  # relative error allowed between an attention path and the matmul reference


def require_cuda(backend: str = "exllama", cpu_threads: int | None = None) -> Any:
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


def rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _cache_class(quant: str | None):
    from exllamav2 import ExLlamaV2Cache, ExLlamaV2Cache_Q4, ExLlamaV2Cache_Q6, ExLlamaV2Cache_Q8

    return {None: ExLlamaV2Cache, "FP16": ExLlamaV2Cache, "Q8": ExLlamaV2Cache_Q8, "Q6": ExLlamaV2Cache_Q6,
            "Q4": ExLlamaV2Cache_Q4}[quant]


def _round_page(n: int) -> int:
    return max(PAGE, (n + PAGE - 1) // PAGE * PAGE)


class Loaded:
    """One loaded ExLlamaV2 model (main or draft) with its cache and tokenizer."""

    def __init__(self, config, model, cache, tokenizer, model_dir: Path):
        self.config, self.model, self.cache, self.tokenizer, self.model_dir = config, model, cache, tokenizer, model_dir


def load_model(model_dir: str, *, max_seq_len: int | None, cache_size: int | None, cache_quant: str | None,
               gpus: list[float] | None, tp: bool, chunk_size: int, rope_scale: float | None = None,
               rope_alpha: float | None = None, progress: LoadProgress | None = None, what: str = "model") -> Loaded:
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache_TP, ExLlamaV2Config, ExLlamaV2Tokenizer

    path = check_model_dir(model_dir)
    config = ExLlamaV2Config(str(path))
    if max_seq_len:
        config.max_seq_len = max_seq_len
    if rope_scale:
        config.scale_pos_emb = rope_scale
    if rope_alpha:
        config.scale_alpha_value = rope_alpha
    config.max_input_len = chunk_size
    config.max_attention_size = chunk_size ** 2
    seq_len = config.max_seq_len
    cache_tokens = _round_page(max(cache_size or seq_len, seq_len))
    model = ExLlamaV2(config)
    base = _cache_class(cache_quant)
    split = [float(g) for g in gpus] if gpus else None

    def callback(done: int, total: int) -> None:
        if progress is not None and total and (done == total or done % max(1, total // 10) == 0):
            progress.update(f"loading {what} ({done}/{total} modules)", 0.1 + 0.7 * done / total)

    if tp:
        model.load_tp(split, callback=callback, expect_cache_tokens=cache_tokens, expect_cache_base=base)
        cache = ExLlamaV2Cache_TP(model, base=base, max_seq_len=cache_tokens)
    elif split:
        model.load(split, callback=callback)
        cache = base(model, max_seq_len=cache_tokens)
    else:
        cache = base(model, max_seq_len=cache_tokens, lazy=True)
        model.load_autosplit(cache, callback=callback)
    tokenizer = ExLlamaV2Tokenizer(config)
    return Loaded(config, model, cache, tokenizer, path)


# ------------------------------------------------------------------------------------- attention check


def flash_attn_state() -> tuple[bool, bool]:
    """(flash-attn usable at all, flash-attn good for paged attention ≥ 2.5.7) as ExLlamaV2 sees it."""
    from exllamav2 import attn

    has = bool(getattr(attn, "has_flash_attn", False))
    paged = bool(getattr(attn, "has_flash_attn_with_paged", False))
    return has, paged


def _set_path(config, path: str) -> None:
    config.no_flash_attn = path != "flash"
    config.no_xformers = True
    config.no_sdpa = path != "sdpa"


def _path_logits(loaded: Loaded, ids, path: str, tail: int):
    """Logits of the last ``tail`` positions: one prefill without cache, and prefill + decode with a cache."""
    import torch
    from exllamav2 import ExLlamaV2Cache, ExLlamaV2Cache_TP

    _set_path(loaded.config, path)
    vocab = loaded.config.vocab_size
    model = loaded.model
    with torch.inference_mode():
        full = model.forward(ids).float()[0, -tail:, :vocab].cpu()
        if model.tp_context is not None:
            cache = ExLlamaV2Cache_TP(model, base=ExLlamaV2Cache, max_seq_len=PAGE)
        else:
            cache = ExLlamaV2Cache(model, max_seq_len=PAGE)
        model.forward(ids[:, :-tail], cache, preprocess_only=True)
        steps = []
        for i in range(ids.shape[1] - tail, ids.shape[1]):
            steps.append(model.forward(ids[:, i:i + 1], cache).float()[0, -1, :vocab].cpu())
        del cache
    return full, torch.stack(steps)


def attention_self_check(loaded: Loaded, wanted: str = "auto", seq: int = 48, tail: int = 4) -> dict[str, Any]:
    """Pick an attention path whose logits agree with the matmul reference; raise when none does."""
    import torch

    has_flash, _ = flash_attn_state()
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, loaded.config.vocab_size, (1, seq), generator=gen)
    ref_full, ref_steps = _path_logits(loaded, ids, "matmul", tail)
    report: dict[str, Any] = {"matmul_decode_vs_prefill": rel_err(ref_steps, ref_full)}
    if report["matmul_decode_vs_prefill"] > CHECK_TOLERANCE:
        raise GallamaError("ExLlamaV2 attention self-check failed: decoding through the cache disagrees with a "
                           f"full prefill (relative error {report['matmul_decode_vs_prefill']:.3g}); refusing to "
                           "serve wrong logits")
    if wanted == "auto":
        candidates = (["flash"] if has_flash else []) + ["matmul"]
    elif wanted == "flash" and not has_flash:
        raise GallamaError("attention=flash was asked for but flash-attn is not installed (or too old) for ExLlamaV2")
    else:
        candidates = [wanted]
    probe = ["sdpa"] if "sdpa" not in candidates else []  # measured for the log only
    chosen = None
    for path in candidates + probe:
        if path == "matmul":
            err = 0.0
        else:
            try:
                full, steps = _path_logits(loaded, ids, path, tail)
                err = max(rel_err(full, ref_full), rel_err(steps, ref_full))
            except Exception as exc:  # a path that cannot run at all
                log.warning("attention path %s failed to run: %s", path, exc)
                err = float("inf")
        report[f"{path}_rel_err"] = err
        ok = err <= CHECK_TOLERANCE
        if path in probe:
            log.info("attention path %s: relative error %.3g vs matmul (%s)", path, err,
                     "agrees" if ok else "WRONG, not used")
            continue
        if ok and chosen is None:
            chosen = path
        elif not ok:
            log.warning("attention path %s disagrees with the matmul reference (relative error %.3g): not used",
                        path, err)
    if chosen is None:
        raise GallamaError(f"ExLlamaV2 attention self-check: the {wanted} attention path gives wrong logits "
                           f"(report {report}); refusing to serve them")
    _set_path(loaded.config, chosen)
    report["chosen"] = chosen
    return report


# ------------------------------------------------------------------------------------------- loading


def load_exllama(settings: ExLlamaSettings, progress: LoadProgress) -> "ExLlamaBackend":
    torch = require_cuda("exllama", settings.cpu_threads)
    check_model_dir(settings.model_id)
    progress.update("importing ExLlamaV2 (the first use builds its CUDA extension, ~2 min)", 0.02)
    from exllamav2.generator import ExLlamaV2DynamicGenerator

    t0 = time.perf_counter()
    main = load_model(settings.model_id, max_seq_len=settings.max_seq_len, cache_size=settings.cache_size,
                      cache_quant=settings.cache_quant, gpus=settings.gpus, tp=settings.tp,
                      chunk_size=settings.chunk_size, rope_scale=settings.rope_scale, rope_alpha=settings.rope_alpha,
                      progress=progress)
    draft = None
    if settings.draft_model_id:
        progress.update("loading the draft model", 0.8)
        draft = load_model(settings.draft_model_id, max_seq_len=main.config.max_seq_len,
                           cache_size=settings.draft_cache_size or main.cache.max_seq_len,
                           cache_quant=settings.draft_cache_quant or settings.cache_quant, gpus=settings.draft_gpus,
                           tp=False, chunk_size=settings.chunk_size, progress=progress, what="draft model")
        check_same_vocab(main, draft)
    progress.update("checking the attention path against the matmul reference", 0.85)
    report = attention_self_check(main, settings.attention)
    if draft is not None:
        attention_self_check(draft, report["chosen"])
    _, flash_paged = flash_attn_state()
    paged = settings.paged if settings.paged is not None else (flash_paged and report["chosen"] == "flash")
    if paged and report["chosen"] != "flash":
        raise GallamaError("paged=True needs flash-attn >= 2.5.7 (paged attention)")
    batch = settings.max_batch_size if paged else 1
    if paged:
        log.info("ExLlamaV2: paged attention with flash-attn (batches up to %d jobs, prompt caching and "
                 "deduplication on)", batch)
    else:
        log.warning("ExLlamaV2: flash-attn >= 2.5.7 is not installed, so the dynamic generator runs unpaged: "
                    "one job at a time (concurrent requests queue). Install flash-attn to batch, or use the "
                    "exllamav3 backend, which batches with its own kernels.")
    generator = ExLlamaV2DynamicGenerator(
        model=main.model, cache=main.cache, tokenizer=main.tokenizer, max_batch_size=batch,
        max_chunk_size=min(settings.chunk_size, main.config.max_input_len), paged=paged,
        draft_model=draft.model if draft else None, draft_cache=draft.cache if draft else None,
        num_draft_tokens=settings.num_draft_tokens)
    generator.warmup()
    torch.cuda.synchronize()
    log.info("ExLlamaV2 model %s loaded in %.1fs (attention: %s, self-check %s)", settings.served_name,
             time.perf_counter() - t0, report["chosen"], {k: f"{v:.2g}" if isinstance(v, float) else v
                                                           for k, v in report.items()})
    progress.update("ready", 1.0)
    return ExLlamaBackend(settings, main, draft, generator, report, paged, batch)


def check_same_vocab(main: Loaded, draft: Loaded) -> None:
    a = main.tokenizer.get_id_to_piece_list()
    b = draft.tokenizer.get_id_to_piece_list()
    if len(a) != len(b) or a != b:
        raise GallamaError(f"the draft model {draft.model_dir} has a different vocabulary from the model "
                           f"{main.model_dir} ({len(b)} vs {len(a)} tokens); speculative decoding needs the same "
                           "tokenizer")


def eos_ids(loaded: Loaded) -> list[int]:
    return eos_token_ids(loaded.model_dir, loaded.config.eos_token_id, loaded.tokenizer.eos_token_id)


# ------------------------------------------------------------------------------------------- serving


class ExLlamaBackend(Backend):
    def __init__(self, settings: ExLlamaSettings, main: Loaded, draft: Loaded | None, generator, report: dict,
                 paged: bool, max_batch_size: int):
        self.add_bos = wants_bos(main.model_dir)
        super().__init__("exllama", settings.served_name, main.config.max_seq_len,
                         chat_template_from_dir(main.model_dir, engine_adds_bos=self.add_bos))
        self.settings = settings
        self.main, self.draft = main, draft
        self.generator = generator
        self.tokenizer = main.tokenizer
        self.attention = report
        self.paged, self.max_batch_size = paged, max_batch_size
        self.stop_ids = eos_ids(main)
        #: Benchmarks set this False to generate exactly max_tokens (EOS ignored), as the raw side does.
        self.stop_on_eos = True
        self._filter_cls = None
        self._ll_tokenizer = None
        self.engine = EngineLoop(generator, settings.served_name)
        self.concurrency = settings.max_batch_size

    def engine_stats(self) -> dict[str, float]:
        return self.engine.stats()

    def info(self) -> dict:
        return {"max_seq_len": self.max_seq_len, "paged": self.paged, "max_batch_size": self.max_batch_size,
                "attention": self.attention.get("chosen"), "cache_quant": self.settings.cache_quant,
                "draft_model": self.settings.draft_model_id}

    # ---------------------------------------------------------------------------------- per request
    def encode(self, text: str):
        return self.tokenizer.encode(text, add_bos=self.add_bos, encode_special_tokens=True)

    def grammar_filter(self, grammar: str):
        from .grammar import GrammarMasker, ll_tokenizer_for_dir, make_filter_class

        if self._filter_cls is None:
            self._filter_cls = make_filter_class()
            self._ll_tokenizer = ll_tokenizer_for_dir(self.main.model_dir, self.stop_ids[:1] or [0])
        try:
            masker = GrammarMasker(self._ll_tokenizer, grammar, self.generator.padded_vocab_size)
        except ValueError as exc:
            raise InvalidRequestError(f"grammar: {exc}", param="response_format") from None
        return self._filter_cls(self.main.model, self.tokenizer, masker)

    def make_job(self, request: GenerationRequest):
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        ids = self.encode(request.prompt)
        prompt_len = ids.shape[-1]
        room = self.max_seq_len - prompt_len
        if room <= 0:
            raise InvalidRequestError(f"the prompt is {prompt_len} tokens; this model's context is "
                                      f"{self.max_seq_len} tokens (max_seq_len)", param="messages",
                                      code="context_length_exceeded")
        max_new = min(request.max_tokens, room) if request.max_tokens else room
        if request.banned_strings and request.grammar:
            raise InvalidRequestError("ExLlamaV2 cannot combine banned strings with a grammar constraint "
                                      "(response_format, tools, regex)", param="banned_strings")
        settings = ExLlamaV2Sampler.Settings()
        for key, value in sampler_attributes(request.sampling).items():
            setattr(settings, key, value)
        stops: list = list(self.stop_ids) if self.stop_on_eos else []
        stops += [s for s in request.stop if s]
        filters = [self.grammar_filter(request.grammar)] if request.grammar else None
        return ExLlamaV2DynamicJob(input_ids=ids, max_new_tokens=max_new, gen_settings=settings,
                                   seed=request.sampling.seed, stop_conditions=stops,
                                   banned_strings=request.banned_strings or None, filters=filters,
                                   identifier=request.request_id, decode_special_tokens=False), prompt_len

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        job, prompt_len = self.make_job(request)  # raises (400) before the first chunk
        async for chunk in self.engine.stream(job, prompt_len, "ExLlamaV2"):
            yield chunk

    def generate_into(self, request: GenerationRequest, target, key):
        """The engine worker's way: chunks handed over on the engine thread (see ``Backend.generate_into``)."""
        job, prompt_len = self.make_job(request)  # raises (400) before anything starts
        return self.engine.start(job, prompt_len, "ExLlamaV2", target, key)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)
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
