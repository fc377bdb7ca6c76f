"""LLGuidance grammar enforcement for ExLlamaV2, in two layers.

:class:`GrammarMasker` holds everything per request that does not need the engine: an ``LLMatcher`` over
the request's Lark grammar (the core compiles every constraint into one), the packed token bitmask, and
the logit masking. It imports only llguidance, numpy and torch, so its logic is tested on CPU.

:func:`make_filter_class` wraps it in an ``ExLlamaV2Filter`` subclass (built lazily, because importing
exllamav2 needs the CUDA extension). The filter takes ExLlamaV2's logit-mask path: the mask for the next
token is computed in the generator's filter thread pool while the GPU runs the forward pass
(``use_background_worker``), then applied to the job's logits on the CPU.

Semantics are llama.cpp's llguidance integration: the whole generation must match the grammar; EOS is
allowed only where the grammar accepts; once the grammar can go no further only EOS is allowed, so the job
stops at grammar completion.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np


@lru_cache(maxsize=8)
def ll_tokenizer(tokenizer_json: str, eos_ids: tuple[int, ...], n_vocab: int | None = None):
    """An ``LLTokenizer`` from a model's ``tokenizer.json`` (cached: building one takes about a second)."""
    import llguidance

    text = Path(tokenizer_json).read_text(encoding="utf-8")
    return llguidance.LLTokenizer(text, n_vocab=n_vocab, eos_token=list(eos_ids) if len(eos_ids) > 1 else eos_ids[0])


def ll_tokenizer_for_dir(model_dir: str | os.PathLike, eos_ids: Iterable[int], n_vocab: int | None = None):
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no tokenizer.json: grammar-constrained generation (JSON schema, "
                                "regex, tool calls) needs the model's fast tokenizer file")
    return ll_tokenizer(str(path), tuple(eos_ids), n_vocab)


@lru_cache(maxsize=256)
def _compiled(grammar: str):
    import llguidance

    return llguidance.grammar_from("lark", grammar)


class GrammarMasker:
    """Per-request LLGuidance state: consume sampled tokens, produce the mask of allowed next tokens."""

    def __init__(self, tokenizer, grammar: str, logits_size: int):
        import llguidance
        import torch

        self.tokenizer = tokenizer
        self.grammar = grammar
        self.logits_size = logits_size  # the engine's (possibly padded) vocabulary size
        self.matcher = llguidance.LLMatcher(tokenizer, _compiled(grammar))
        self._check()
        words = (tokenizer.vocab_size + 31) // 32
        self._bitmask = np.zeros((words,), dtype=np.int32)
        # torch view of the unpacked mask (True = allowed); padding tokens beyond the tokenizer stay False
        self._allowed = torch.zeros((logits_size,), dtype=torch.bool)
        self._allowed_np = self._allowed.numpy()
        self._n = min(tokenizer.vocab_size, logits_size)

    def _check(self) -> None:
        if self.matcher.is_error():
            raise ValueError(f"grammar error: {self.matcher.get_error()}")

    def reset(self) -> None:
        import llguidance

        self.matcher = llguidance.LLMatcher(self.tokenizer, _compiled(self.grammar))

    def consume(self, token: int) -> None:
        if self.matcher.is_stopped():
            return
        self.matcher.consume_token(int(token))
        self._check()

    @property
    def accepting(self) -> bool:
        return self.matcher.is_accepting()

    @property
    def stopped(self) -> bool:
        return self.matcher.is_stopped()

    def compute(self):
        """Fill the allowed-token mask for the next position; returns the bool tensor (True = allowed)."""
        bm = self._bitmask
        self.matcher.unsafe_compute_mask_ptr(bm.ctypes.data, bm.size * bm.itemsize)
        self._check()
        bits = np.unpackbits(bm.view(np.uint8), bitorder="little")
        self._allowed_np[:self._n] = bits[:self._n]
        return self._allowed

    def allowed_ids(self) -> list[int]:
        return np.flatnonzero(self._allowed_np).tolist()

    def apply(self, logits):
        """Set every logit the grammar forbids to -inf (in place; ``logits`` is the flat vocabulary row)."""
        logits.masked_fill_(~self._allowed[:logits.shape[-1]], float("-inf"))
        return logits


def make_filter_class():
    """The ``ExLlamaV2Filter`` subclass around :class:`GrammarMasker` (imports exllamav2)."""
    from exllamav2.generator.filters import ExLlamaV2Filter

    class LLGuidanceFilter(ExLlamaV2Filter):
        def __init__(self, model, tokenizer, masker: GrammarMasker):
            super().__init__(model, tokenizer)
            self.masker = masker
            self.eos_ids = set(masker.tokenizer.eos_tokens) if hasattr(masker.tokenizer, "eos_tokens") \
                else {masker.tokenizer.eos_token}

        def clone(self, c=None):
            raise NotImplementedError("LLGuidanceFilter is per request and cannot be cloned")

        def begin(self, prefix_str):
            self.masker.reset()

        def feed(self, token):
            self.masker.consume(int(token.item()) if hasattr(token, "item") else int(token))

        def use_background_worker(self) -> bool:
            return True

        def can_mask_logits(self) -> bool:
            return True

        def prepare_logit_mask(self) -> bool:
            self.masker.compute()
            return True

        def mask_logits(self, logits):
            return self.masker.apply(logits)

        def next(self):
            # token-list path (used when the mask path does not apply, e.g. several filters)
            self.masker.compute()
            allowed = set(self.masker.allowed_ids())
            return allowed, allowed & self.eos_ids

    return LLGuidanceFilter
