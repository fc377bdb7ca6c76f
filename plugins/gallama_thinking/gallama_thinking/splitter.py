"""Split a streamed answer into reasoning and content at an opening and a closing tag.

Text arrives in arbitrary pieces (a tag can be cut anywhere, even one character per piece); the splitter
holds back only the characters that could still be the start of a tag, so nothing of a tag ever leaks
into the wrong side and everything else is passed on as soon as it is known.
"""

from __future__ import annotations

REASONING = "reasoning"
CONTENT = "content"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ReasoningSplitter:
    """A small state machine over the output: *detect* -> *inside* -> *after*.

    - ``detect``: the output has not shown yet whether it starts (after whitespace) with ``open_tag``;
      if it does, go *inside*, otherwise everything is content.
    - ``inside``: reasoning until ``close_tag``.
    - ``after``: content; whitespace right after the closing tag is dropped.

    ``keep_tags`` puts the tags themselves into the reasoning (XML thinking templates, where the tags are
    the structure) instead of dropping them (``<think>``). ``started`` starts *inside* (a chat template
    that already opened ``<think>`` in the prompt).
    """

    def __init__(self, open_tag: str, close_tag: str, *, keep_tags: bool = False, started: bool = False):
        self.open_tag = open_tag
        self.close_tag = close_tag
        self.keep_tags = keep_tags
        self.state = "inside" if started else "detect"
        self.buffer = ""
        self.strip_leading = False
        self.saw_reasoning = started

    @property
    def finished_reasoning(self) -> bool:
        return self.saw_reasoning and self.state == "after"

    def feed(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self.buffer += text
        while self.buffer:
            if self.state == "detect":
                stripped = self.buffer.lstrip()
                if stripped.startswith(self.open_tag):
                    self.state = "inside"
                    self.saw_reasoning = True
                    self.buffer = stripped[len(self.open_tag):]
                    if self.keep_tags:
                        out.append((REASONING, self.open_tag))
                    continue
                if self.open_tag.startswith(stripped):
                    break  # still undecided (empty, whitespace or a piece of the tag)
                out.append((CONTENT, self.buffer))
                self.buffer = ""
                self.state = "after"
                break
            if self.state == "inside":
                index = self.buffer.find(self.close_tag)
                if index >= 0:
                    reasoning = self.buffer[:index] + (self.close_tag if self.keep_tags else "")
                    if reasoning:
                        out.append((REASONING, reasoning))
                    self.buffer = self.buffer[index + len(self.close_tag):]
                    self.state = "after"
                    self.strip_leading = True
                    continue
                keep = _partial_suffix(self.buffer, self.close_tag)
                ready = self.buffer[:len(self.buffer) - keep]
                if ready:
                    out.append((REASONING, ready))
                self.buffer = self.buffer[len(ready):]
                break
            # after
            text_out = self.buffer
            if self.strip_leading:
                text_out = text_out.lstrip()
                if text_out:
                    self.strip_leading = False
            if text_out:
                out.append((CONTENT, text_out))
            self.buffer = ""
        return out

    def flush(self) -> list[tuple[str, str]]:
        """The held-back text at the end of the stream."""
        text, self.buffer = self.buffer, ""
        if not text:
            return []
        if self.state == "inside":
            return [(REASONING, text)]
        if self.state == "after" and self.strip_leading:
            text = text.lstrip()
        return [(CONTENT, text)] if text else []
