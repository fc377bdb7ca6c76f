"""Read a GGUF file's key/value metadata (chat template, special tokens, context length) without the engine.

Only the header is read; tensors are never touched.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays we keep (token strings are needed to name BOS/EOS); others are skipped.
_KEEP_ARRAYS = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"}


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, f.read(size))[0]


def _string(f: BinaryIO) -> str:
    return f.read(_read(f, "<Q")).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int, keep: bool) -> Any:
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item_kind, count = _read(f, "<I"), _read(f, "<Q")
        if item_kind in _SCALARS and not keep:
            f.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)
            return None
        if item_kind == _STRING and not keep:
            for _ in range(count):
                f.seek(_read(f, "<Q"), 1)
            return None
        return [_value(f, item_kind, keep) for _ in range(count)]
    raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_metadata(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = _read(f, "<I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        _read(f, "<Q")  # tensor count
        kv_count = _read(f, "<Q")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = _string(f)
            kind = _read(f, "<I")
            value = _value(f, kind, key in _KEEP_ARRAYS)
            if value is not None:
                metadata[key] = value
        return metadata
