"""The request pipeline for chat and legacy completions (no FastAPI here).

request model -> RequestContext -> preprocess hooks -> chat template -> constraints -> generate hook ->
stream processors -> OpenAI chunks (SSE payloads) or one response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from pydantic import ValidationError

from gallama_core.request_notes import note
from gallama_core.api.state import AppState
from gallama_core.models.backend import GenerationChunk, SamplingParams
from gallama_core.pipeline.constraints import compile_constraints
from gallama_core.pipeline.context import RequestContext
from gallama_core.pipeline.prompting import neutralize_special_tokens, render_chat_prompt
from gallama_core.errors import GallamaError, InvalidRequestError
from gallama_core.models.manager import ModelInstance
from gallama_core.models.registry import install_hint
from gallama_core.api.protocol import (ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
                       ChoiceLogprobs, ChunkChoice, CompletionChoice, CompletionLogprobs, CompletionRequest,
                       CompletionResponse, Delta,
                       ResponseMessage, ToolCall, FunctionCall, Usage, new_id, now)
from gallama_core.pipeline.mixture_of_agents import FIELD as MIXTURE_FIELD, run_mixture
from gallama_core.pipeline.stream_events import StreamEvent

log = logging.getLogger("gallama.serving")

#: Well-known fields owned by optional plugins: named in the 400 when the plugin is not installed.
PLUGIN_FIELD_OWNERS = {
    "thinking_template": "gallama-thinking",
    "return_thinking": "gallama-thinking",
    "artifact": "gallama-artifact",
}


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def validation_error_to_400(exc: ValidationError) -> InvalidRequestError:
    err = exc.errors()[0]
    loc = ""
    for part in err["loc"]:  # field names and list indexes; skip pydantic's union-member tags
        if isinstance(part, int):
            loc += f"[{part}]"
        elif part.isidentifier() and not part[0].isupper() and part not in _TYPE_TAGS:
            loc += ("." if loc else "") + part
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        message = "field required"
    return InvalidRequestError(f"{loc}: {message}" if loc else message, param=loc or None)


def parse_request(model: type, body: Any):
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error_to_400(exc) from None


def check_extra_fields(request, state: AppState) -> None:
    for name in (request.model_extra or {}):
        if name in state.request_fields:
            continue
        owner = PLUGIN_FIELD_OWNERS.get(name)
        if owner:
            raise InvalidRequestError(f"{name!r} needs the {owner} plugin, which is not installed "
                                      f"({install_hint(owner)})", param=name, code="plugin_not_installed")
        raise InvalidRequestError(f"unrecognized request argument supplied: {name}", param=name)


def sampling_from(request) -> SamplingParams:
    return SamplingParams(temperature=request.temperature, top_p=request.top_p, top_k=request.top_k,
                          min_p=request.min_p, seed=request.seed, presence_penalty=request.presence_penalty,
                          frequency_penalty=request.frequency_penalty,
                          repetition_penalty=request.repetition_penalty)


def message_dict(message, special_tokens: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role,
                            "content": neutralize_special_tokens(message.text, special_tokens or [])}
    if message.name:
        data["name"] = message.name
    if message.tool_calls:
        data["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.function.name, "arguments": _arguments_value(c.function.arguments)}}
            for c in message.tool_calls]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data


def _arguments_value(arguments: str):
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        return arguments


class Pipeline:
    """Runs one chat or completion request through the hooks and the backend."""

    def __init__(self, state: AppState):
        self.state = state
        self.hook = state.pm.hook

    # --------------------------------------------------------------------------------------- preparing
    def _context(self, endpoint: str, request, instance: ModelInstance) -> RequestContext:
        ctx = RequestContext(endpoint=endpoint, request=request, backend=instance.backend,
                             request_id=new_id("chatcmpl" if endpoint == "chat" else "cmpl"))
        ctx.max_tokens = request.token_limit
        ctx.stop = request.stop_strings()
        ctx.sampling = sampling_from(request)
        return ctx

    def _render_prompt(self, ctx: RequestContext) -> None:
        if ctx.endpoint == "completion":
            ctx.prompt = ctx.request.prompt_text + ctx.assistant_prefix
        else:
            ctx.prompt = render_chat_prompt(ctx) + ctx.assistant_prefix

    def _grammar(self, ctx: RequestContext) -> str | None:
        for extra in self.hook.gallama_token_filters(ctx=ctx):
            ctx.constraints.extend(extra or [])
        return compile_constraints(ctx.constraints)

    async def _events(self, ctx: RequestContext, grammar: str | None, index: int) -> AsyncIterator[StreamEvent]:
        gen_request = ctx.generation_request(grammar, index)
        chunks = self.hook.gallama_generate(ctx=ctx, request=gen_request)
        if chunks is None:
            raise GallamaError("no plugin generated a response")
        stream: AsyncIterator[StreamEvent] = _chunks_to_events(ctx, chunks)
        for processor in self.hook.gallama_postprocess_stream(ctx=ctx)[::-1]:
            if processor is not None:
                stream = processor(stream)
        return stream

    async def _start(self, endpoint: str, request) -> tuple[RequestContext, ModelInstance, list[AsyncIterator]]:
        check_extra_fields(request, self.state)
        instance = self.state.models.resolve(request.model, "chat")
        if request.logprobs_wanted is not None and not getattr(instance.backend, "supports_logprobs", False):
            raise InvalidRequestError(f"model {instance.name!r} runs on the {instance.backend.backend_name} backend, "
                                      "which does not return log probabilities (the llama_cpp backend does)",
                                      param="logprobs", code="logprobs_not_supported")
        ctx = self._context(endpoint, request, instance)
        if endpoint == "chat":
            specials = list(getattr(instance.backend, "special_tokens", None) or [])
            ctx.messages = [message_dict(m, specials) for m in request.messages]
        self.hook.gallama_preprocess_request(ctx=ctx)
        self._render_prompt(ctx)
        note(request_id=ctx.request_id, prompt=ctx.prompt)
        grammar = self._grammar(ctx)
        streams = [await self._events(ctx, grammar, i) for i in range(request.n)]
        return ctx, instance, streams

    # ---------------------------------------------------------------------------------------- running
    async def run(self, endpoint: str, body: Any, usage_offset: Usage | None = None):
        """A response model, or when the request streams an async iterator of stream items: chunk models
        (``ChatCompletionChunk``, or ``CompletionResponse`` for legacy completions), an error envelope ``dict``
        when the stream fails after it started, and the final ``"[DONE]"`` (see :func:`sse_payload`).

        Any error that can be known before generation starts (validation, model, constraints, prompt too
        long) is raised here, before the HTTP response begins. ``usage_offset`` is added to the reported usage
        (tokens spent on the request's behalf by earlier calls, e.g. mixture-of-agents drafts).
        """
        if endpoint == "chat" and isinstance(body, dict) and body.get(MIXTURE_FIELD) is not None:
            return await run_mixture(self, body)
        model = ChatCompletionRequest if endpoint == "chat" else CompletionRequest
        request = parse_request(model, body)
        if endpoint == "completion" and request.suffix:
            raise InvalidRequestError("suffix is not supported", param="suffix")
        if endpoint == "completion" and (request.best_of or 1) > 1:
            raise InvalidRequestError("best_of > 1 is not supported", param="best_of")
        ctx, instance, streams = await self._start(endpoint, request)
        instance.active += 1
        note(dispatched_at=time.perf_counter())
        try:
            merged = _merge(streams)
            first = await anext(merged, None)  # errors before the first token are HTTP errors
        except BaseException:
            instance.active -= 1
            raise
        note(first_token_at=time.perf_counter())
        events = _prepend(first, merged)
        if request.stream:
            release = _release_once(instance, events, merged)
            return PipelineStream(self._sse(ctx, events, usage_offset or Usage(), release), release)
        try:
            return await self._collect(ctx, events, usage_offset or Usage())
        finally:
            instance.active -= 1

    async def _collect(self, ctx: RequestContext, events: AsyncIterator[tuple[int, StreamEvent]], offset: Usage):
        outputs: dict[int, list[dict[str, Any]]] = {}
        prompt_tokens = completion_tokens = 0
        async for index, event in events:
            parts = outputs.setdefault(index, [])
            if not parts or (event.part is not None and event.part != parts[-1]["part"]):
                parts.append({"part": event.part, "content": [], "reasoning": [], "tool_calls": {}, "extra": {},
                              "finish_reason": None, "logprobs": []})
            part = parts[-1]
            part["content"].append(event.content)
            part["logprobs"] += event.logprobs or []
            part["reasoning"].append(event.reasoning)
            part["extra"].update(event.extra)
            for delta in event.tool_calls or []:
                call = part["tool_calls"].setdefault(delta.index, {"id": delta.id, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
            if event.finish_reason:
                for p in parts:
                    p["finish_reason"] = event.finish_reason
            prompt_tokens = event.prompt_tokens or prompt_tokens
            completion_tokens += event.completion_tokens or 0
        usage = _usage(prompt_tokens, completion_tokens, offset)
        note(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        ordered = [p for index in sorted(outputs) for p in outputs[index]]
        wants_logprobs = ctx.request.logprobs_wanted is not None
        if ctx.endpoint == "completion":
            prefix = ctx.request.prompt_text if ctx.request.echo else ""
            choices = [CompletionChoice(index=i, text=prefix + "".join(p["content"]), finish_reason=p["finish_reason"],
                                        logprobs=CompletionLogprobs.from_entries(p["logprobs"], len(prefix))
                                        if wants_logprobs else None)
                       for i, p in enumerate(ordered)]
            return CompletionResponse(id=ctx.request_id, created=now(), model=ctx.model_name, choices=choices,
                                      usage=usage)
        choices = []
        for i, p in enumerate(ordered):
            tool_calls = [ToolCall(id=c["id"] or new_id("call"), function=FunctionCall(name=c["name"], arguments=c["arguments"]))
                          for _, c in sorted(p["tool_calls"].items())] or None
            content = "".join(p["content"])
            message = ResponseMessage(content=None if (tool_calls and not content) else content,
                                      reasoning_content="".join(p["reasoning"]) or None,
                                      tool_calls=tool_calls, **p["extra"])
            choices.append(ChatChoice(index=i, message=message, finish_reason=p["finish_reason"],
                                      logprobs=ChoiceLogprobs(content=p["logprobs"]) if wants_logprobs else None))
        return ChatCompletionResponse(id=ctx.request_id, created=now(), model=ctx.model_name, choices=choices,
                                      usage=usage)

    async def _sse(self, ctx: RequestContext, events: AsyncIterator[tuple[int, StreamEvent]], offset: Usage,
                   release) -> AsyncIterator[Any]:
        include_usage = bool(ctx.request.stream_options and ctx.request.stream_options.include_usage)
        created, prompt_tokens, completion_tokens = now(), 0, 0
        chat = ctx.endpoint == "chat"
        itl = self.state.telemetry.itl.labels(ctx.model_name) if self.state.telemetry is not None else None
        last = None
        try:
            if chat:
                for index in range(ctx.request.n):
                    yield _chunk(ctx, created, index, Delta(role="assistant", content="", **ctx.first_delta_extra))
            elif ctx.request.echo:
                yield _text_chunk(ctx, created, 0, ctx.request.prompt_text, None)
            async for index, event in events:
                prompt_tokens = event.prompt_tokens or prompt_tokens
                completion_tokens += event.completion_tokens or 0
                if event.is_empty:
                    continue
                if itl is not None:
                    moment = time.perf_counter()
                    if last is not None:
                        itl.observe(moment - last)
                    last = moment
                if chat:
                    delta = Delta(content=event.content or None, reasoning_content=event.reasoning or None,
                                  tool_calls=event.tool_calls, **event.extra)
                    yield _chunk(ctx, created, index, delta, event.finish_reason, event.logprobs)
                else:
                    yield _text_chunk(ctx, created, index, event.content, event.finish_reason, event.logprobs)
            if include_usage:
                usage = _usage(prompt_tokens, completion_tokens, offset)
                if chat:
                    yield ChatCompletionChunk(id=ctx.request_id, created=created, model=ctx.model_name, choices=[],
                                              usage=usage)
                else:
                    yield CompletionResponse(id=ctx.request_id, created=created, model=ctx.model_name, choices=[],
                                             usage=usage)
            yield "[DONE]"
        except GallamaError as exc:  # after the stream started: report in-band, as OpenAI does, then end it
            yield exc.envelope()
            yield "[DONE]"
        finally:
            note(prompt_tokens=prompt_tokens + offset.prompt_tokens,
                 completion_tokens=completion_tokens + offset.completion_tokens)
            await release()


class PipelineStream:
    """The items of a streamed answer. ``aclose()`` ends the generation and frees the model's slot even when
    the stream was never iterated (a client that left before the response began)."""

    def __init__(self, items: AsyncIterator[Any], release):
        self._items, self._release = items, release

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._items.__anext__()

    async def aclose(self) -> None:
        try:
            await self._items.aclose()
        finally:
            await self._release()


def _release_once(instance: ModelInstance, *streams: AsyncIterator):
    released = False

    async def release() -> None:
        nonlocal released
        if not released:
            released = True
            instance.active -= 1
            for stream in streams:
                await stream.aclose()

    return release


def _usage(prompt_tokens: int, completion_tokens: int, offset: Usage) -> Usage:
    prompt_tokens += offset.prompt_tokens
    completion_tokens += offset.completion_tokens
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


def sse_payload(item: Any) -> str:
    """The ``data:`` line of one stream item from :meth:`Pipeline.run`."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return json.dumps(item)
    return item.model_dump_json(exclude_none=True)


def _chunk(ctx, created, index, delta: Delta, finish_reason=None,
           logprobs: list[dict] | None = None) -> ChatCompletionChunk:
    choice = ChunkChoice(index=index, delta=delta, finish_reason=finish_reason,
                         logprobs=ChoiceLogprobs(content=logprobs) if logprobs else None)
    return ChatCompletionChunk(id=ctx.request_id, created=created, model=ctx.model_name, choices=[choice])


def _text_chunk(ctx, created, index, text, finish_reason, logprobs: list[dict] | None = None) -> dict:
    legacy = CompletionLogprobs.from_entries(logprobs).model_dump() if logprobs else None
    return {"id": ctx.request_id, "object": "text_completion", "created": created,
            "model": ctx.model_name, "choices": [{"index": index, "text": text, "logprobs": legacy,
                                                  "finish_reason": finish_reason}]}


async def _chunks_to_events(ctx: RequestContext, chunks: AsyncIterator[GenerationChunk]) -> AsyncIterator[StreamEvent]:
    """Backend chunks as events; the forced prefix is emitted first when it belongs to the output."""
    prefix = ctx.assistant_prefix if ctx.prefix_in_output else ""
    try:
        async for chunk in chunks:
            text = chunk.text
            if prefix:
                text, prefix = prefix + text, ""
            yield StreamEvent(content=text, finish_reason=chunk.finish_reason, prompt_tokens=chunk.prompt_tokens,
                              completion_tokens=chunk.completion_tokens, logprobs=chunk.logprobs)
    finally:
        await chunks.aclose()


async def _prepend(first, rest: AsyncIterator):
    try:
        if first is not None:
            yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


async def _merge(streams: list[AsyncIterator[StreamEvent]]) -> AsyncIterator[tuple[int, StreamEvent]]:
    """Events of all choices as (choice index, event); a single stream is passed through directly."""
    if len(streams) == 1:
        try:
            async for event in streams[0]:
                yield 0, event
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream):
        try:
            async for event in stream:
                await queue.put((index, event))
        except BaseException as exc:
            await queue.put((index, exc))
        finally:
            await queue.put((index, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            index, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            await stream.aclose()
