"""Home folder, model_config.yaml and the -id launch syntax."""

from __future__ import annotations

import pytest

from gallama_core.models.registry import BackendRegistry
from gallama_core.config import (ensure_home, gallama_home, load_model_config, parse_id_string,
                                 resolve_model_settings)
from gallama_core.errors import ConfigError


@pytest.fixture
def registry(pm):
    return BackendRegistry(pm)


def test_home_created_with_commented_example(home):
    assert gallama_home() == home
    ensure_home()
    text = (home / "model_config.yaml").read_text()
    assert text.startswith("#") and "model_id" in text and "cache_quant" in text
    assert load_model_config() == {}  # all commented out


def test_parse_id_string():
    raw = parse_id_string("model_id=qwen2-72B gpus=22,22,10,0 cache_quant=Q8 tp=True")
    assert raw == {"model_id": "qwen2-72B", "gpus": "22,22,10,0", "cache_quant": "Q8", "tp": "True"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_id_string("model_id=x gpus")
    with pytest.raises(ConfigError, match="model_id is required"):
        parse_id_string("gpus=1")


def test_resolve_every_spec_key(home, registry):
    raw = parse_id_string("model_id=/m/qwen model_name=q gpus=20,15 cache_size=4096 cache_quant=q6 max_seq_len=2048 "
                          "backend=ECHO tp=true draft_model_id=/m/small draft_model_name=s draft_gpus=1 "
                          "draft_cache_size=1024 draft_cache_quant=FP16")
    s = resolve_model_settings(raw, registry, {})
    assert s.gpus == [20.0, 15.0] and s.cache_quant == "Q6" and s.tp is True and s.backend == "echo"
    assert (s.cache_size, s.max_seq_len, s.draft_cache_size, s.draft_cache_quant) == (4096, 2048, 1024, "FP16")
    assert s.served_name == "q"
    assert resolve_model_settings({"model_id": "/a/b/mistral", "backend": "echo"}, registry, {}).served_name == "mistral"


@pytest.mark.parametrize("extra,needle", [
    ("colour=blue", "unknown key 'colour'"),
    ("cache_quant=Q5", "key 'cache_quant'"),
    ("gpus=a,b", "key 'gpus'"),
    ("max_seq_len=-4", "key 'max_seq_len'"),
])
def test_bad_keys_name_model_and_key(home, registry, extra, needle):
    with pytest.raises(ConfigError) as info:
        resolve_model_settings(parse_id_string(f"model_id=mymodel backend=echo {extra}"), registry, {})
    assert "model 'mymodel'" in str(info.value) and needle in str(info.value)


def test_yaml_entry_is_merged_and_overridden(home, registry):
    entries = {"mistral": {"model_id": "/models/mistral-exl2", "backend": "echo", "cache_quant": "Q4"}}
    s = resolve_model_settings({"model_id": "mistral", "cache_quant": "Q8"}, registry, entries)
    assert s.model_id == "/models/mistral-exl2" and s.served_name == "mistral" and s.cache_quant == "Q8"


def test_yaml_entry_validated(home, registry):
    ensure_home()
    (home / "model_config.yaml").write_text("broken:\n  model_id: /x\n  backend: echo\n  cache_size: lots\n")
    with pytest.raises(ConfigError, match="model 'broken'.*cache_size"):
        resolve_model_settings({"model_id": "broken"}, registry)


def test_unknown_backend_names_distribution(home, registry):
    with pytest.raises(ConfigError, match="pip install gallama-exllama"):
        resolve_model_settings({"model_id": "/x", "backend": "exLlama"}, registry, {})
    with pytest.raises(ConfigError, match="pip install gallama-llamacpp"):
        resolve_model_settings({"model_id": "/x/model.gguf", "backend": "Llama_cpp"}, registry, {})
