"""The llama.cpp backend: xllamacpp's in-process C++ server, driven from asyncio.

Each generation runs ``Server.handle_completions`` (blocking, thread-safe) in a pool thread with a streaming
callback, which returns True to stop the job once the consumer is gone (client disconnect): that frees the slot.
``generate`` hands the chunks to the event loop with ``call_soon_threadsafe``; ``generate_into`` (the engine
worker's way) hands them to the worker's target from the pool thread itself, so that no event loop wakes per
token. llama.cpp's own continuous batching runs ``n_parallel`` sequences at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

from gallama_core.models.backend import Backend, GenerationChunk, GenerationRequest
from gallama_core.pipeline.chat_template import CHATML_TEMPLATE, ChatTemplate
from gallama_core.errors import GallamaError, InvalidRequestError
from gallama_core.plugin_system.registrations import LoadProgress

from .gguf_metadata import read_gguf_metadata
from .settings import LlamaCppSettings

log = logging.getLogger("gallama.llama_cpp")

CACHE_TYPES = {"FP16": "GGML_TYPE_F16", "Q8": "GGML_TYPE_Q8_0", "Q6": "GGML_TYPE_Q5_1", "Q4": "GGML_TYPE_Q4_0"}
DEFAULT_MAX_SEQ_LEN = 4096
_END = object()


def _template_from_metadata(meta: dict[str, Any]) -> ChatTemplate:
    tokens = meta.get("tokenizer.ggml.tokens") or []

    def token(key: str) -> str:
        index = meta.get(key)
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else ""

    return ChatTemplate(source=meta.get("tokenizer.chat_template") or CHATML_TEMPLATE,
                        bos_token=token("tokenizer.ggml.bos_token_id"), eos_token=token("tokenizer.ggml.eos_token_id"),
                        engine_adds_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)))


CONTROL_TOKEN = 3  # GGUF token type of control tokens (<|im_start|>, <|eot_id|>, ...)


def control_tokens(meta: dict[str, Any]) -> list[str]:
    """The model's control-token strings: text that must never become one of them when a client types it."""
    tokens, types = meta.get("tokenizer.ggml.tokens") or [], meta.get("tokenizer.ggml.token_type") or []
    return [t for t, kind in zip(tokens, types) if kind == CONTROL_TOKEN and len(t) > 1]


def _has_gpu(xlc) -> bool:
    try:
        return any(str(d.get("type", "")).lower() not in ("cpu", "accel") and "cpu" not in str(d.get("name", "")).lower()
                   for d in xlc.get_device_info())
    except Exception:
        return False


def build_params(settings: LlamaCppSettings, meta: dict[str, Any]):
    """xllamacpp CommonParams for the settings (also used by the benchmark for the raw-engine side)."""
    import xllamacpp as xlc

    arch = meta.get("general.architecture", "llama")
    trained = int(meta.get(f"{arch}.context_length") or DEFAULT_MAX_SEQ_LEN)
    n_parallel = settings.n_parallel
    if settings.cache_size:
        n_ctx = settings.cache_size
        seq_len = n_ctx // n_parallel
        if settings.max_seq_len and settings.max_seq_len > seq_len:
            log.warning("cache_size %d over %d slots leaves %d tokens per sequence (< max_seq_len %d)",
                        n_ctx, n_parallel, seq_len, settings.max_seq_len)
    else:
        seq_len = settings.max_seq_len or min(trained, DEFAULT_MAX_SEQ_LEN)
        n_ctx = seq_len * n_parallel

    params = xlc.CommonParams()
    params.model.path = settings.model_id
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.n_batch = settings.n_batch
    params.n_predict = -1
    params.kv_unified = False  # each slot owns max_seq_len tokens: llama.cpp enforces the per-request limit
    params.cont_batching = True
    threads = settings.n_threads or os.cpu_count() or 4
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.warmup = True
    # llama.cpp's own log: warnings and errors, unless gallama runs at --log-level debug (3 = its info lines:
    # per-request timings, slot traces).
    params.verbosity = 3 if log.isEnabledFor(logging.DEBUG) else 2
    if settings.cache_quant:
        kind = getattr(xlc.ggml_type, CACHE_TYPES[settings.cache_quant])
        params.cache_type_k = kind
        params.cache_type_v = kind
    if settings.flash_attn is not None:
        params.flash_attn_type = (xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED if settings.flash_attn
                                  else xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    gpu = _has_gpu(xlc)
    if settings.gpus or settings.n_gpu_layers is not None:
        if not gpu:
            log.info("this xllamacpp build has no GPU: gpus/n_gpu_layers ignored, running on the CPU")
        else:
            params.n_gpu_layers = settings.n_gpu_layers if settings.n_gpu_layers is not None else -1
            if settings.gpus:
                total = sum(settings.gpus) or 1.0
                params.tensor_split = [g / total for g in settings.gpus]
    if settings.draft_model_id:
        params.speculative.mparams_dft.path = settings.draft_model_id
        if settings.draft_cache_quant:
            kind = getattr(xlc.ggml_type, CACHE_TYPES[settings.draft_cache_quant])
            params.speculative.cache_type_k = kind
            params.speculative.cache_type_v = kind
    return params, seq_len


def close_embedded_http_server(params) -> str:
    """xllamacpp's ``Server`` always starts llama.cpp's own HTTP server beside the in-process API gallama uses, by
    default on a random 127.0.0.1 port with no key and CORS that echoes any origin. gallama never calls it, so it
    is shut in: it listens on a Unix socket in a private (0700) temporary folder instead of a TCP port, requires a
    random key, and its optional endpoints (/slots, /props, /metrics) are off. Returns the folder (removed on
    close)."""
    folder = tempfile.mkdtemp(prefix="gallama-llamacpp-")  # mode 0700: no other user can reach the socket
    params.hostnames = [os.path.join(folder, "engine.sock")]
    params.api_keys = [secrets.token_urlsafe(32)]
    params.endpoint_slots = False
    params.endpoint_props = False
    params.endpoint_metrics = False
    return folder


def load_llamacpp(settings: LlamaCppSettings, progress: LoadProgress) -> "LlamaCppBackend":
    if not os.path.isfile(settings.model_id):
        raise FileNotFoundError(f"GGUF file not found: {settings.model_id}")
    progress.update("reading GGUF metadata", 0.05)
    meta = read_gguf_metadata(settings.model_id)
    if settings.draft_model_id:
        draft_meta = read_gguf_metadata(settings.draft_model_id)
        if len(draft_meta.get("tokenizer.ggml.tokens", [])) != len(meta.get("tokenizer.ggml.tokens", [])):
            raise ValueError("the draft model's vocabulary differs from the model's; speculative decoding needs "
                             "the same vocabulary")
    params, seq_len = build_params(settings, meta)
    socket_folder = close_embedded_http_server(params)
    progress.update(f"loading weights ({params.n_parallel} slots x {seq_len} tokens)", 0.2)
    import xllamacpp as xlc

    try:
        server = xlc.Server(params)
    except BaseException:
        shutil.rmtree(socket_folder, ignore_errors=True)
        raise
    progress.update("ready", 1.0)
    backend = LlamaCppBackend(settings, server, _template_from_metadata(meta), seq_len)
    backend.socket_folder = socket_folder
    backend.special_tokens = control_tokens(meta)
    return backend


def request_body(request: GenerationRequest) -> dict[str, Any]:
    """The llama.cpp completion request for a gallama generation request."""
    s = request.sampling
    # return_progress: llama.cpp reports each prompt batch it processed, so the streaming callback runs during a
    # long prefill too and can stop the job there when the client has gone (instead of after the whole prompt).
    body: dict[str, Any] = {"prompt": request.prompt, "stream": True, "cache_prompt": True, "return_progress": True,
                            "stream_options": {"include_usage": True},
                            "max_tokens": request.max_tokens if request.max_tokens else -1}
    for key in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(s, key)
        if value is not None:
            body[key] = value
    if s.seed is not None:
        body["seed"] = s.seed & 0xFFFFFFFF  # llama.cpp's seed is 32 bits: the same seed, never a wrapped one
    if s.repetition_penalty is not None:
        body["repeat_penalty"] = s.repetition_penalty
    if request.stop:
        body["stop"] = request.stop
    if request.grammar:
        body["grammar"] = "%llguidance {}\n" + request.grammar
    if request.logprobs is not None:
        body["logprobs"] = max(1, request.logprobs)  # llama.cpp reports nothing for 0: ask 1, keep none
    return body


def _logprobs(choice: dict, top: int | None) -> list[dict] | None:
    """llama.cpp's per-token entries in OpenAI's chat shape, ``top`` alternatives each."""
    entries = (choice.get("logprobs") or {}).get("content") if top is not None else None
    if not entries:
        return None
    keep = ("token", "logprob", "bytes")
    return [{**{k: e.get(k) for k in keep},
             "top_logprobs": [{k: t.get(k) for k in keep} for t in (e.get("top_logprobs") or [])[:top]]}
            for e in entries]


class ChunkTranslator:
    """llama.cpp's streamed items for one request as gallama chunks: ``translate(item)`` returns the chunk, None
    for an item with nothing to pass on (a prompt-progress report, an empty delta), or raises the engine's
    error as a :class:`GallamaError`."""

    def __init__(self, logprobs: int | None):
        self.logprobs = logprobs
        self.prompt_tokens = None  # from the prompt-progress reports: known before the first token
        self.finished = False

    def __call__(self, item: dict) -> GenerationChunk | None:
        if "error" in item:
            raise _engine_error(item["error"])
        choices = item.get("choices") or []
        usage = item.get("usage")
        progress = item.get("prompt_progress")
        if isinstance(progress, dict) and self.prompt_tokens is None:
            self.prompt_tokens = progress.get("total")
        if choices:
            choice = choices[0]
            finish = choice.get("finish_reason")
            if finish:
                self.finished = True
            text = choice.get("text") or ""
            logprobs = _logprobs(choice, self.logprobs)
            if text or finish or logprobs:
                return GenerationChunk(text=text, finish_reason=_finish(finish) if finish else None,
                                       prompt_tokens=usage.get("prompt_tokens") if usage else self.prompt_tokens,
                                       completion_tokens=usage.get("completion_tokens") if usage else None,
                                       logprobs=logprobs)
        elif usage and self.finished:
            return GenerationChunk(prompt_tokens=usage.get("prompt_tokens"),
                                   completion_tokens=usage.get("completion_tokens"))
        return None


def engine_failure(exc: Exception) -> GallamaError:
    """An exception out of ``handle_completions`` as the consumer's error."""
    return GallamaError(f"llama.cpp failed: {exc}")


class LlamaCppBackend(Backend):
    def __init__(self, settings: LlamaCppSettings, server, chat_template: ChatTemplate, max_seq_len: int):
        super().__init__("llama_cpp", settings.served_name, max_seq_len, chat_template)
        self.settings = settings
        self.concurrency = settings.n_parallel
        self.supports_logprobs = True
        self.socket_folder: str | None = None
        self._server = server
        self._pool = ThreadPoolExecutor(max_workers=max(32, settings.n_parallel * 4),
                                        thread_name_prefix=f"llama-{settings.served_name}")

    def info(self) -> dict:
        return {"n_parallel": self.settings.n_parallel, "max_seq_len": self.max_seq_len}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        body = request_body(request)
        translate = ChunkTranslator(request.logprobs)

        def on_chunk(chunk) -> bool:
            if not stop.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return stop.is_set()

        def run() -> None:
            try:
                self._server.handle_completions(body, on_chunk)
            except Exception as exc:  # surfaced to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        future = loop.run_in_executor(self._pool, run)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, Exception):
                    raise engine_failure(item)
                chunk = translate(item)
                if chunk is not None:
                    yield chunk
        finally:
            stop.set()  # the callback returns True next time: llama.cpp cancels the task and frees the slot
            if not future.done():
                future.add_done_callback(lambda f: f.exception())

    def generate_into(self, request: GenerationRequest, target, key) -> Callable[[], None]:
        """The engine worker's way (see ``Backend.generate_into``): each chunk goes to ``target`` from the pool
        thread that runs the request, as llama.cpp hands it over; then ``(key, None)``, or ``(key, error)``.
        Exactly one of those ends it, and nothing follows ``cancel()``."""
        body = request_body(request)
        translate = ChunkTranslator(request.logprobs)
        stop = threading.Event()
        lock = threading.Lock()  # cancel() against a delivery in flight: nothing is posted once it returned

        def deliver(delivery, last: bool = False) -> None:
            with lock:
                if stop.is_set():
                    return
                if last:
                    stop.set()
                try:
                    target.post([(key, delivery)])
                except Exception:  # never into llama.cpp's callback: the job stops instead
                    log.exception("delivering a chunk failed")
                    stop.set()

        def on_chunk(item) -> bool:
            if stop.is_set():
                return True
            try:
                chunk = translate(item)
            except GallamaError as exc:
                deliver(exc, last=True)
                return True
            if chunk is not None:
                deliver(chunk)
            return stop.is_set()

        def run() -> None:
            try:
                self._server.handle_completions(body, on_chunk)
            except Exception as exc:
                deliver(engine_failure(exc), last=True)
            else:
                deliver(None, last=True)

        self._pool.submit(run)

        def cancel() -> None:
            with lock:
                stop.set()

        return cancel

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._server = None
        if self.socket_folder:
            shutil.rmtree(self.socket_folder, ignore_errors=True)


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _engine_error(error: dict) -> GallamaError:
    message = error.get("message", "llama.cpp error")
    if error.get("type") == "exceed_context_size_error":
        return InvalidRequestError(f"the prompt is too long: {message}", param="messages",
                                   code="context_length_exceeded")
    if int(error.get("code", 500)) < 500:
        return InvalidRequestError(message)
    return GallamaError(message)
