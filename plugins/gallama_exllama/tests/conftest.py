"""Fixtures of the ExLlamaV2 plugin's tests.

CPU tests need no model: a byte-level tokenizer.json is written on the fly for the grammar tests. GPU tests
(test_gpu.py) need CUDA and ``GALLAMA_EXL_TINY`` (a model folder, made by scripts/gpu_check.sh); they skip
with the reason otherwise.
"""

from __future__ import annotations

import json
import os

import pytest


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_byte_tokenizer(folder) -> int:
    """A byte-level BPE tokenizer (256 byte tokens + a few merges + <eos>=id 0 special); returns the EOS id."""
    b2u = _bytes_to_unicode()
    vocab = {"<eos>": 0}
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    merges = [("Ġ", "t"), ("e", "s"), ("Ġt", "es"), ("{", '"'), ('"', ":")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": 0, "content": "<eos>", "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]}}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    return 0


@pytest.fixture
def byte_tokenizer_dir(tmp_path):
    write_byte_tokenizer(tmp_path)
    return tmp_path


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(scope="session")
def tiny_model() -> str:
    if not cuda_available():
        pytest.skip("needs an NVIDIA GPU with CUDA (run scripts/gpu_check.sh on a GPU machine)")
    path = os.environ.get("GALLAMA_EXL_TINY")
    if not path:
        pytest.skip("set GALLAMA_EXL_TINY to a model folder (scripts/gpu_check.sh makes a random-weight one)")
    return path
