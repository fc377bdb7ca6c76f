"""Engine-free readers of Hugging Face model folders (gallama_core.models.hf_model_dir)."""

from __future__ import annotations

import json

from gallama_core.models.hf_model_dir import eos_token_ids


def test_eos_token_ids_merge_engine_values_and_generation_config(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    # engine values first, in order; lists and tuples flattened; None, negatives and repeats dropped
    assert eos_token_ids(tmp_path, [5, 2], None, (3,), -1, 5) == [5, 2, 3, 7]


def test_eos_token_ids_without_generation_config(tmp_path):
    assert eos_token_ids(tmp_path, 0) == [0]
    assert eos_token_ids(tmp_path) == []
