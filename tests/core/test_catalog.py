"""The model catalogs the backend plugins ship (``catalog.yaml``): well formed, and every row of the user
documentation's downloader tables is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from gallama_core.errors import ConfigError
from gallama_core.models.catalog import REPO_ID, load_catalog
from gallama_core.models.downloader import plan_catalog_download

PLUGINS = Path(__file__).parents[2] / "plugins"
CATALOGS = {"exllama": PLUGINS / "gallama_exllama/gallama_exllama/catalog.yaml",
            "exllamav3": PLUGINS / "gallama_exllamav3/gallama_exllamav3/catalog.yaml",
            "llama_cpp": PLUGINS / "gallama_llamacpp/gallama_llamacpp/catalog.yaml",
            "embedding": PLUGINS / "gallama_embed/gallama_embed/catalog.yaml"}

# The spec's "Integrated Model downloader" tables: model -> backend -> bpw labels.
SPEC = {
    "llama-3.1-8B": {"exllama": "3.0 3.5 4.0 4.5 5.0 6.0 8.0", "llama_cpp": "2.0 3.0 4.0 5.0 6.0 8.0"},
    "llama-3.1-70B": {"exllama": "2.5 3.0 3.5 4.0 4.5 5.0 6.0", "llama_cpp": "3.0 4.0 5.0"},
    "mistral": {"exllama": "2.8 3.0 4.0 4.5 5.0 6.0", "llama_cpp": "2.0 3.0 4.0 5.0 6.0 8.0"},
    "mistral-large": {"exllama": "2.3 2.5 2.75 3.0 3.5 3.75 4.0 4.25 4.5 4.75 5.0 6.0"},
    "mistral-nemo": {"exllama": "2.5 3.0 3.5 4.0 4.5 5.0 6.0 8.0", "llama_cpp": "3.0 4.0 5.0 6.0 8.0"},
    "codestral": {"exllama": "3.0 3.5 4.25 5.0 6.5 8.0", "llama_cpp": "2.0 3.0 4.0 5.0 6.0 8.0"},
    "gemma-2-9B": {"exllama": "2.5 3.0 3.5 4.0 4.5 5.0 5.5 6.0 8.0"},
    "gemma-2-27B": {"exllama": "3.0 3.5 4.0 4.5 5.0 6.0 8.0"},
    "qwen-2-1.5B": {"exllama": "3.0 4.0 5.0 6.0 8.0", "llama_cpp": "4.0 5.0 6.0 8.0"},
    "qwen-2-7B": {"exllama": "3.0 4.0 5.0 6.0 8.0"},
    "qwen-2-72B": {"exllama": "3.0 3.5 4.0 4.25 4.65 5.0 6.0 8.0", "llama_cpp": "2.0 3.0 4.0"},
    "yi-1.5-34B": {"exllama": "3.0 3.5 3.75 4.0 4.25 5.0 6.0 6.5 8.0"},
    "qwen-2.5-72B": {"exllama": "2.2 3.0 3.5 4.25 4.65 5.0 6.5 8.0", "llama_cpp": "2.0 3.0 4.0 5.0 6.0 8.0"},
    "qwen-2.5-32B": {"exllama": "3.0 4.0 4.65 5.0 6.0 8.0", "llama_cpp": "3.0 4.0 5.0 6.0 8.0"},
    "qwen-2.5-14B": {"exllama": "3.0 3.5 4.25 5.0 6.5 8.0", "llama_cpp": "3.0 4.0 5.0 6.0 8.0"},
    "qwen-2.5-7B": {"exllama": "3.5 4.25 5.0 6.5 8.0", "llama_cpp": "3.0 4.0 5.0 6.0 8.0"},
    "multilingual-e5-large-instruct": {"embedding": "16.0"},
    "gte-large-en-v1.5": {"embedding": "16.0"},
}


@pytest.fixture(scope="module")
def catalog():
    return [entry for backend, path in CATALOGS.items() for entry in load_catalog(path, backend)]


def test_every_entry_is_well_formed(catalog):
    assert len(catalog) >= 40
    for entry in catalog:
        for label, source in entry.quantizations.items():
            repo_and_rev, _, path = source.partition("#")
            repo, _, revision = repo_and_rev.partition("@")
            assert REPO_ID.match(repo), (entry.name, label, source)
            assert revision or path, (entry.name, label, source)  # a branch, or a file (or files) of main
            if entry.backend == "llama_cpp":
                assert path.endswith(".gguf"), (entry.name, label, source)


def test_every_row_of_the_documented_tables_is_there(catalog):
    have = {(e.name, e.backend): set(e.quantizations) for e in catalog}
    for name, backends in SPEC.items():
        for backend, labels in backends.items():
            missing = set(labels.split()) - have.get((name, backend), set())
            assert not missing, f"{name} ({backend}) lacks {sorted(missing)}"
    assert ("SmolLM2-135M-Instruct", "llama_cpp") in have  # the built-in default
    assert {name for name, backend in have if backend == "exllamav3"} >= {"qwen-2.5-7B", "llama-3.1-8B", "mistral"}


def test_malformed_catalogs_name_file_and_entry(tmp_path):
    bad = {"- name: x\n  repo: nobody\n  quantizations: {'4.0': {revision: 4.0bpw}}\n": "0.repo",
           "- name: x\n  repo: a/b\n  quantizations: {'4.0': {}}\n": "exactly one of",
           "- name: x\n  repo: a/b\n  quantizations: {'four': {file: x.gguf}}\n": "bits-per-weight",
           "- name: x\n  repo: a/b\n  quantizations: {'4.0': {file: ../x.gguf}}\n": "inside the repository",
           "- {name: x, repo: a/b, quantizations: {'4.0': {file: x}}}\n- {name: X, repo: a/c, quantizations: "
           "{'4.0': {file: y}}}\n": "listed twice"}
    for text, fragment in bad.items():
        path = tmp_path / "catalog.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_catalog(path, "exllama")
        assert str(path) in str(caught.value) and fragment in str(caught.value), str(caught.value)


def test_download_plans_pick_an_installed_backend_and_list_what_exists(catalog):
    plan = plan_catalog_download("qwen-2.5-7B:4.0", None, catalog, installed=["llama_cpp"])
    assert plan.backend == "llama_cpp" and plan.file.endswith(".gguf")
    plan = plan_catalog_download("qwen-2.5-7B:4.25", None, catalog, installed=["llama_cpp", "exllama"])
    assert plan.backend == "exllama" and plan.revision and not plan.file  # the spec's default first
    split = plan_catalog_download("qwen-2.5-72B:8.0", "llama_cpp", catalog, installed=[])
    assert split.include and "*" in split.include[0]  # a split GGUF: every part
    with pytest.raises(ConfigError, match="none of these backends is installed"):
        plan_catalog_download("mistral-large:4.0", None, catalog, installed=["llama_cpp"])
    with pytest.raises(ConfigError, match="available: 2.3, 2.5"):
        plan_catalog_download("mistral-large:9.0", "exllama", catalog, installed=[])
    with pytest.raises(ConfigError, match="Known models: .*qwen-2.5-7B"):
        plan_catalog_download("qwen-9", None, catalog, installed=[])
