"""A local Ray head for the plugin's tests (loopback; 4 logical CPUs, as each instance asks for 1), started once
per session and stopped after."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gallama_core.testing import free_port, smollm2_gguf

LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[3] / "test-output"))
RAY = str(Path(sys.executable).parent / "ray")
# The tests' own cluster on loopback: no usage report, and no token auth whatever ~/.ray holds.
RAY_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="session")
def gguf() -> str:
    return smollm2_gguf()


@pytest.fixture(scope="session")
def ray_head():
    """The address of a Ray head on this machine: what a user passes to --ray-address."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=4",
                    "--include-dashboard=false", "--object-store-memory=200000000", "--disable-usage-stats",
                    f"--temp-dir={temp}"], check=True, env=RAY_ENV, stdout=subprocess.DEVNULL, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=RAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)


@pytest.fixture(scope="session")
def ray_env() -> dict[str, str]:
    """The environment for processes that talk to the test cluster."""
    return RAY_ENV


@pytest.fixture(scope="session")
def logs() -> Path:
    return LOGS


@pytest.fixture(scope="session")
def named_actors(ray_head):
    """A function listing gallama's actors alive on the test cluster."""
    return lambda: _named_actors(ray_head)


def _named_actors(address: str) -> list[str]:
    """gallama's actors alive on the cluster, asked by a separate driver process."""
    script = ("import ray, json; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
              "print(json.dumps([a['name'] if isinstance(a, dict) else a "
              "for a in ray.util.list_named_actors(all_namespaces=True)]))") % address
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=RAY_ENV, timeout=120,
                         check=True).stdout.strip().splitlines()[-1]
    import json

    return [name for name in json.loads(out) if name.startswith("gallama:")]
