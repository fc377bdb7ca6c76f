"""Facts about the HTTP request being served, noted by any layer (model routing, the pipeline) and read by the
front's request log and metrics (:mod:`gallama_core.api.observability`). A context variable: no layer below the
HTTP front needs to import it."""

from __future__ import annotations

import contextvars
from typing import Any

#: Per-request notes (model, tokens, request_id, prompt; ``perf_counter`` stamps: ``arrived`` at the front,
#: ``dispatched_at`` to the engine, ``first_token_at``) for the request log line and the metrics.
request_stats: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("gallama_request_stats",
                                                                                       default=None)


def note(**fields: Any) -> None:
    """Add facts about the current request to its log line and metrics (no-op outside a request)."""
    stats = request_stats.get()
    if stats is not None:
        stats.update(fields)
