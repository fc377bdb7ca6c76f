"""Fixtures of the ExLlamaV2 plugin's tests.

CPU tests need no model: a byte-level tokenizer.json (``gallama_core.testing.write_byte_tokenizer``) is
written on the fly for the grammar tests. GPU tests (test_gpu.py) need CUDA and ``GALLAMA_EXL_TINY`` (a model
folder, made by scripts/gpu_check.sh); they skip with the reason otherwise.
"""

from __future__ import annotations

import os

import pytest

from gallama_core.testing import write_byte_tokenizer


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
