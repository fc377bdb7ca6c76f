"""Incremental parser: raw answer text (with ``<artifact ...>`` tags) -> parts with ``artifact_meta``.

Text arrives in arbitrary pieces; a tag may be cut anywhere. The parser holds back only what could still be
part of a tag (and trailing whitespace, so parts come out stripped), never lets tag text into content, and
closes whatever is open when the stream ends (a generation cut by ``max_tokens``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

OPEN = "<artifact"
CLOSE = "</artifact>"
_ATTRIBUTE = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*"([^"]*)"')
ARTIFACT_TYPES = ("code", "self_contained_text")


def text_meta() -> dict[str, Any]:
    return {"tag_type": "text"}


def artifact_meta(tag: str, number: int) -> dict[str, Any]:
    """The meta of an opening tag (``<artifact identifier=... type=... language=... title=...>``)."""
    attrs = dict(_ATTRIBUTE.findall(tag))
    kind = attrs.get("type", "code")
    return {"tag_type": "artifact",
            "artifact_type": kind if kind in ARTIFACT_TYPES else "code",
            "identifier": attrs.get("identifier") or f"artifact-{number}",
            "title": attrs.get("title", ""),
            "language": attrs.get("language", "")}


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


@dataclass
class Piece:
    """Content for one part: ``part`` numbers the parts in order, ``meta`` is the part's artifact_meta."""

    part: int
    meta: dict[str, Any]
    content: str


@dataclass
class ArtifactParser:
    buffer: str = ""
    mode: str = "text"  # text | tag | artifact
    part: int = 0
    meta: dict[str, Any] = field(default_factory=text_meta)
    started: bool = False  # the current part has emitted non-whitespace
    pending_ws: str = ""  # whitespace held back until more content shows it is not trailing
    artifacts: int = 0

    def _emit(self, text: str, out: list[Piece]) -> None:
        """Content of the current part, stripped at both ends across pieces."""
        if not self.started:
            text = text.lstrip()
            if not text:
                return
            self.started = True
        body = text.rstrip()
        tail = text[len(body):]
        if body:
            out.append(Piece(self.part, self.meta, self.pending_ws + body))
            self.pending_ws = ""
        self.pending_ws += tail

    def _next_part(self, meta: dict[str, Any]) -> None:
        if self.started:
            self.part += 1
        self.meta, self.started, self.pending_ws = meta, False, ""

    def feed(self, text: str) -> list[Piece]:
        out: list[Piece] = []
        self.buffer += text
        while self.buffer:
            if self.mode == "text":
                index = self.buffer.find(OPEN)
                if index >= 0:
                    self._emit(self.buffer[:index], out)
                    self.buffer = self.buffer[index:]
                    self.mode = "tag"
                    continue
                keep = _partial_suffix(self.buffer, OPEN)
                self._emit(self.buffer[:len(self.buffer) - keep], out)
                self.buffer = self.buffer[len(self.buffer) - keep:]
                break
            if self.mode == "tag":
                after = self.buffer[len(OPEN):len(OPEN) + 1]
                if after and not (after.isspace() or after == ">"):  # "<artifactual": not our tag
                    self.mode = "text"
                    self._emit(OPEN, out)
                    self.buffer = self.buffer[len(OPEN):]
                    continue
                end = self.buffer.find(">")
                if end < 0:
                    break
                self.artifacts += 1
                self._next_part(artifact_meta(self.buffer[:end + 1], self.artifacts))
                self.buffer = self.buffer[end + 1:]
                self.mode = "artifact"
                continue
            # artifact
            index = self.buffer.find(CLOSE)
            if index >= 0:
                self._emit(self.buffer[:index], out)
                self.buffer = self.buffer[index + len(CLOSE):]
                self.mode = "text"
                self._next_part(text_meta())
                continue
            keep = _partial_suffix(self.buffer, CLOSE)
            self._emit(self.buffer[:len(self.buffer) - keep], out)
            self.buffer = self.buffer[len(self.buffer) - keep:]
            break
        return out

    def finish(self) -> list[Piece]:
        """End of the stream: flush held text; an unterminated opening tag is dropped, an open artifact
        simply ends."""
        out: list[Piece] = []
        if self.mode != "tag" and self.buffer:
            self._emit(self.buffer, out)
        self.buffer = ""
        return out


def parse_all(text: str) -> list[dict[str, Any]]:
    """The parts of a complete answer, as ``[{"artifact_meta": ..., "content": ...}]`` (for tests, tools)."""
    parser = ArtifactParser()
    parts: dict[int, dict[str, Any]] = {}
    for piece in parser.feed(text) + parser.finish():
        parts.setdefault(piece.part, {"artifact_meta": piece.meta, "content": ""})["content"] += piece.content
    return [parts[k] for k in sorted(parts)]
