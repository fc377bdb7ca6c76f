"""Render Hugging Face style Jinja chat templates (from GGUF metadata or tokenizer_config.json).

One renderer for every backend keeps prompts identical across engines. Templates run in a sandbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from gallama_core.errors import InvalidRequestError

# Used when a model ships no template: ChatML, which most instruction-tuned models understand.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str):
    raise InvalidRequestError(f"chat template: {message}", param="messages")


@dataclass
class ChatTemplate:
    """A model's chat template plus the special tokens it refers to."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    #: True when the engine adds BOS itself while tokenizing, so a leading BOS in the text is dropped.
    engine_adds_bos: bool = False

    @cached_property
    def _compiled(self):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda value, indent=None, **_: json.dumps(value, indent=indent, ensure_ascii=False)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        return env.from_string(self.source)

    @cached_property
    def supports_tools(self) -> bool:
        """Whether the template renders a ``tools`` list itself."""
        return "tools" in self.source

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
               tools: list[dict] | None = None, **extra: Any) -> str:
        try:
            text = self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token, tools=tools, **extra)
        except InvalidRequestError:
            raise
        except Exception as exc:  # a template error is the request's fault (roles the template refuses...)
            raise InvalidRequestError(f"the model's chat template could not render these messages: {exc}",
                                      param="messages") from exc
        if self.engine_adds_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token):]
        return text
