"""Answers of ``/v1/responses`` kept in memory so that ``previous_response_id`` can continue them."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class StoredResponse:
    """A stored answer: the conversation that led to it and the answer, as chat messages (without the
    request's ``instructions``: as in OpenAI's API they are not carried over), and the response object."""

    messages: list[dict[str, Any]]
    response: dict[str, Any]


class ResponseStore:
    """At most ``capacity`` answers, the least recently used dropped first (a bound on memory)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def get(self, response_id: str) -> StoredResponse | None:
        stored = self._items.get(response_id)
        if stored is not None:
            self._items.move_to_end(response_id)
        return stored

    def put(self, response_id: str, stored: StoredResponse) -> None:
        if self.capacity <= 0:
            return
        self._items[response_id] = stored
        self._items.move_to_end(response_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._items)
