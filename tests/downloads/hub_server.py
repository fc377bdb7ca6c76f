"""A Hugging Face hub on loopback, just the endpoints huggingface_hub calls for ``hf_hub_download`` and
``snapshot_download`` (repository info per revision; HEAD and ranged GET of a file), serving files from
memory or disk, optionally slowly, and counting the bytes it sends."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

Content = bytes | Path


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, dict[str, Content]]], bytes_per_second: int | None = None):
        self.repos = repos  # repo id -> revision -> path -> content
        self.bytes_per_second = bytes_per_second
        self.served: dict[str, int] = {}  # "repo@revision/path" -> bytes sent
        self.file_gets = 0
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._file(self, head=True)

            def do_GET(self):
                if self.path.startswith("/api/models/"):
                    hub._info(self)
                else:
                    hub._file(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _sha(repo: str, revision: str) -> str:
        return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()

    def _bytes(self, content: Content) -> bytes:
        return content.read_bytes() if isinstance(content, Path) else content

    def _error(self, handler, status: int, code: str) -> None:
        body = json.dumps({"error": code}).encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _info(self, handler) -> None:
        # /api/models/{owner}/{name}/revision/{revision}, or /api/models/{owner}/{name}/tree/{revision} (listing)
        parts = unquote(urlparse(handler.path).path).split("/")[3:]
        repo, kind, revision = "/".join(parts[:2]), parts[2] if len(parts) > 2 else "revision", \
            "/".join(parts[3:]) or "main"
        if repo not in self.repos:
            return self._error(handler, 404, "RepoNotFound")
        revision = {self._sha(repo, r): r for r in self.repos[repo]}.get(revision, revision)
        files = self.repos[repo].get(revision)
        if files is None:
            return self._error(handler, 404, "RevisionNotFound")
        if kind == "tree":
            folders = sorted({"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)})
            listing = [{"type": "directory", "path": f, "oid": self._sha(repo, f)} for f in folders] + [
                {"type": "file", "path": n, "size": len(self._bytes(c)), "oid": hashlib.sha1(self._bytes(c)).hexdigest()}
                for n, c in sorted(files.items())]
            body = json.dumps(listing).encode()
        else:
            body = json.dumps({"id": repo, "modelId": repo, "sha": self._sha(repo, revision), "private": False,
                               "siblings": [{"rfilename": name} for name in sorted(files)]}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _file(self, handler, head: bool) -> None:
        # /{owner}/{name}/resolve/{revision}/{path}
        parts = unquote(urlparse(handler.path).path).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(handler, 404, "EntryNotFound")
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo not in self.repos:
            return self._error(handler, 404, "RepoNotFound")
        by_commit = {self._sha(repo, r): r for r in self.repos[repo]}
        revision = by_commit.get(revision, revision)  # snapshot_download asks for files at the commit
        if revision not in self.repos[repo]:
            return self._error(handler, 404, "RevisionNotFound")
        content = self.repos[repo][revision].get(name)
        if content is None:
            return self._error(handler, 404, "EntryNotFound")
        data = self._bytes(content)
        start = 0
        ranged = handler.headers.get("Range", "")
        if ranged.startswith("bytes="):
            start = int(ranged[6:].split("-")[0] or 0)
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", self._sha(repo, revision))
        handler.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(data) - start))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if head:
            return
        self.file_gets += 1
        key = f"{repo}@{revision}/{name}"
        step = 64 << 10
        try:
            for offset in range(start, len(data), step):
                piece = data[offset:offset + step]
                handler.wfile.write(piece)
                self.served[key] = self.served.get(key, 0) + len(piece)
                if self.bytes_per_second:
                    time.sleep(len(piece) / self.bytes_per_second)
        except (BrokenPipeError, ConnectionResetError):
            pass
