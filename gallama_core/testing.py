"""Helpers for tests of gallama and its plugins: real servers on free ports, the small real models.

Used by the project's own tests and usable by third-party plugin authors::

    from gallama_core.testing import running_server, smollm2_gguf

    with running_server(["-id", f"model_id={smollm2_gguf()} model_name=smol"]) as base_url:
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="x")

:class:`StepGenerator` stands in for an ExLlama-shaped engine in tests of engine-thread backends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from gallama_core.models.default_model import ensure_default_model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shared_home() -> Path:
    """A gallama home shared by test runs (``$GALLAMA_TEST_HOME`` or a temp folder), so the default model
    is fetched once."""
    path = Path(os.environ.get("GALLAMA_TEST_HOME") or Path(tempfile.gettempdir()) / "gallama-test-home")
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_gguf() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF (fetched once into the shared test home)."""
    old = os.environ.get("GALLAMA_HOME_PATH")
    os.environ["GALLAMA_HOME_PATH"] = str(shared_home())
    try:
        return str(ensure_default_model(say=lambda *_: None))
    finally:
        if old is None:
            os.environ.pop("GALLAMA_HOME_PATH", None)
        else:
            os.environ["GALLAMA_HOME_PATH"] = old


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned), or fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, ... utime at 11, stime at 12)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (Linux /proc)."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        return proc_stat(pid)[0] != "Z"
    except FileNotFoundError:
        return False


def parent_pid(pid: int) -> int:
    """The parent of process ``pid`` (Linux /proc)."""
    return int(proc_stat(pid)[1])


def wait_healthy(base_url: str, process: subprocess.Popen | None = None, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"gallama exited with code {process.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url} did not become healthy in {timeout}s")


def start_server(args: list[str], env: dict[str, str] | None = None, log_path: Path | None = None,
                 python: str = sys.executable, timeout: float = 180.0,
                 log_level: str = "warning") -> tuple[subprocess.Popen, str]:
    """Start ``gallama run ARGS`` on a free port with ``python``; return the process and its base URL once
    ``/health`` answers 200 (the log's end is in the error otherwise). The caller stops the process."""
    port = free_port()
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log_path = log_path or Path(tempfile.mkstemp(prefix="gallama-server-", suffix=".log")[1])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([python, "-c", "from gallama_core.cli import main; main()", "run",
                                    "--port", str(port), "--log-level", log_level, *args],
                                   stdout=log, stderr=subprocess.STDOUT, env=full_env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, process, timeout)
    except Exception as exc:
        process.kill()
        process.wait()
        raise RuntimeError(f"{exc}\n--- server log ---\n{log_path.read_text(errors='replace')[-4000:]}") from None
    return process, base_url


@contextlib.contextmanager
def running_server(args: list[str], home: Path | None = None, env: dict[str, str] | None = None,
                   log_path: Path | None = None, timeout: float = 180.0) -> Iterator[str]:
    """Start ``gallama run ARGS`` on a free port; yield its base URL (no ``/v1``); stop it afterwards."""
    home = home or shared_home()
    process, base_url = start_server(args, env={"GALLAMA_HOME_PATH": str(home), **(env or {})}, log_path=log_path,
                                     timeout=timeout)
    try:
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_venv(folder: Path, requirements: list[str], timeout: float = 900) -> str:
    """A virtual environment in ``folder`` with ``requirements`` (pip arguments: names, ``-e PATH``...), made with
    uv when it is there (fast, from its cache), else with venv and pip; returns its Python. For tests of engine
    workers that run in another environment."""
    import shutil

    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    python = str(Path(folder) / "bin" / "python")
    if Path(uv).exists():
        subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(folder)], check=True)
        install = [uv, "pip", "install", "-q", "--python", python]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        install = [python, "-m", "pip", "install", "-q"]
    subprocess.run([*install, *requirements], check=True, timeout=timeout)
    return python


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
    """Write ``tokenizer.json`` of a byte-level BPE tokenizer (256 byte tokens, a few merges, ``<eos>`` = id 0,
    special) into ``folder``; returns the EOS id. For grammar/constraint tests that need a real tokenizer but no
    model."""
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


# ------------------------------------------------------------------- an engine for engine-thread backends


class Job:
    """A job of :class:`StepGenerator`: ``steps`` tokens."""

    def __init__(self, steps: int):
        self.steps, self.done = steps, 0


class StepGenerator:
    """An ExLlama-shaped generator, no engine: ``enqueue`` / ``cancel`` / ``iterate``, one result per job per step
    (the digits of its count), ``pause`` seconds a step; ``fail_at`` makes that step raise. For tests of backends
    built on :class:`gallama_core.models.engine_thread.EngineLoop` and of the worker's step messages."""

    def __init__(self, pause: float = 0.0, fail_at: int | None = None):
        self.jobs: list[Job] = []
        self.pause, self.fail_at, self.steps = pause, fail_at, 0
        self.cancelled: list[Job] = []
        self.threads: set[threading.Thread] = set()

    def enqueue(self, job: Job) -> None:
        self.jobs.append(job)

    def cancel(self, job: Job) -> None:
        self.jobs.remove(job)
        self.cancelled.append(job)

    def iterate(self) -> list[dict]:
        self.threads.add(threading.current_thread())
        self.steps += 1
        if self.fail_at is not None and self.steps >= self.fail_at:
            raise RuntimeError("CUDA error: out of memory")
        time.sleep(self.pause)
        out = []
        for job in list(self.jobs):
            job.done += 1
            eos = job.done >= job.steps
            out.append({"job": job, "stage": "streaming", "text": str(job.done % 10), "eos": eos,
                        "eos_reason": "max_new_tokens" if eos else None, "new_tokens": job.done})
            if eos:
                self.jobs.remove(job)
        return out
