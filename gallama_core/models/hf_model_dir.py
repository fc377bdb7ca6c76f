"""What a Hugging Face-format model folder says about itself, read without any engine (no torch import).

Chat template and special tokens come from ``tokenizer_config.json`` (or ``chat_template.jinja`` /
``chat_template.json`` beside it, as newer exports write them); the quantization method from
``config.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gallama_core.pipeline.chat_template import CHATML_TEMPLATE, ChatTemplate


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content") or "")
    return value if isinstance(value, str) else ""


def _template_source(model_dir: Path, cfg: dict[str, Any]) -> str | None:
    source = cfg.get("chat_template")
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default") or next(iter(named.values()), None)
    if isinstance(source, str) and source.strip():
        return source
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    other = read_json(model_dir / "chat_template.json").get("chat_template")
    return other if isinstance(other, str) and other.strip() else None


def chat_template_from_dir(model_dir: str | os.PathLike, engine_adds_bos: bool) -> ChatTemplate:
    """The model's chat template (ChatML when it ships none) with its BOS/EOS strings."""
    model_dir = Path(model_dir)
    cfg = read_json(model_dir / "tokenizer_config.json")
    return ChatTemplate(source=_template_source(model_dir, cfg) or CHATML_TEMPLATE,
                        bos_token=_token_text(cfg.get("bos_token")), eos_token=_token_text(cfg.get("eos_token")),
                        engine_adds_bos=engine_adds_bos)


def wants_bos(model_dir: str | os.PathLike) -> bool:
    """Whether prompts should start with BOS (``add_bos_token`` in tokenizer_config.json; Llama-style default
    True only when the config names a BOS token and does not say otherwise)."""
    cfg = read_json(Path(model_dir) / "tokenizer_config.json")
    if "add_bos_token" in cfg:
        return bool(cfg["add_bos_token"])
    return False


def quant_method(model_dir: str | os.PathLike) -> str | None:
    """``exl2`` / ``exl3`` / ... from config.json's quantization_config, or None for an unquantized model."""
    qc = read_json(Path(model_dir) / "config.json").get("quantization_config") or {}
    method = qc.get("quant_method") if isinstance(qc, dict) else None
    return str(method).lower() if method else None


def is_model_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors"))


def check_model_dir(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"model folder not found: {path} (the ExLlama backends load a folder with "
                                f"config.json, *.safetensors and the tokenizer files)")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face-format model folder")
    if not any(p.glob("*.safetensors")):
        raise FileNotFoundError(f"{path} has no *.safetensors weights")
    return p


def eos_token_ids(model_dir: str | os.PathLike, *known: Any) -> list[int]:
    """The model's EOS token ids, in order and unique: ``known`` (what the engine read from config.json and the
    tokenizer: ints, lists of ints or None) first, then ``generation_config.json``'s ``eos_token_id``."""
    ids: list[int] = []
    for value in (*known, read_json(Path(model_dir) / "generation_config.json").get("eos_token_id")):
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)
    return ids
