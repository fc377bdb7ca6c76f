"""An in-process fake backend for unit tests of the core (the e2e tests use real engines)."""

from __future__ import annotations

import asyncio

from gallama_core import hookimpl
from gallama_core.models.backend import Backend, GenerationChunk
from gallama_core.pipeline.chat_template import CHATML_TEMPLATE, ChatTemplate
from gallama_core.errors import InvalidRequestError
from gallama_core.models.settings import ModelSettings
from gallama_core.plugin_system.registrations import BackendSpec


class EchoBackend(Backend):
    """Echoes the last line of the prompt word by word; records requests."""

    def __init__(self, settings):
        super().__init__("echo", settings.served_name, 64, ChatTemplate(CHATML_TEMPLATE))
        self.requests = []
        self.closed_early = 0

    async def generate(self, request):
        self.requests.append(request)
        if "TOO LONG" in request.prompt:
            raise InvalidRequestError("the prompt is too long", code="context_length_exceeded")
        lines = [line.replace("<|im_end|>", "") for line in request.prompt.split("\n")
                 if line.strip() and "<|im_start|>" not in line]
        words = lines[-1].split() if lines else ["ok"]
        limit = request.max_tokens or len(words)
        finished = False
        try:
            for i, word in enumerate(words[:limit]):
                await asyncio.sleep(0)
                last = i == min(limit, len(words)) - 1
                yield GenerationChunk(text=(" " if i else "") + word,
                                      finish_reason=("length" if limit < len(words) else "stop") if last else None,
                                      prompt_tokens=len(request.prompt.split()) if last else None,
                                      completion_tokens=min(limit, len(words)) if last else None)
            finished = True
        finally:
            if not finished:
                self.closed_early += 1


class EchoPlugin:
    @hookimpl
    def gallama_backends(self):
        return [BackendSpec(name="echo", settings_model=ModelSettings, load=lambda s, p: EchoBackend(s))]
