"""What the front tells its operator: one log line per request and Prometheus metrics at ``GET /metrics``.

The request middleware times every HTTP request and, when its response has been sent to the end (a stream's
last chunk included), records it: ``gallama_requests_total{route, model, status}``, the duration, and what the
pipeline noted for it in :data:`request_stats` (model, prompt/completion tokens, time to first token). Streams
add each gap between two chunks to the inter-token latency histogram. Model states, requests in flight and
queue lengths are read from the model manager when ``/metrics`` is scraped, and so are the engine counters of
backends that keep them (``Backend.engine_stats``, asked from each worker first). The log line never holds the
prompt unless ``--log-prompts`` is given.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gallama_core.request_notes import request_stats

log = logging.getLogger("gallama.requests")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class _ModelStates:
    """Gauges read from the model manager at scrape time."""

    def __init__(self, models):
        self.models = models

    def collect(self):
        state = GaugeMetricFamily("gallama_model_instances", "Model instances by state", labels=["model", "state"])
        active = GaugeMetricFamily("gallama_requests_in_flight", "Requests running or waiting", labels=["model"])
        queued = GaugeMetricFamily("gallama_queue_length", "Requests waiting for a free slot", labels=["model"])
        counts: dict[tuple[str, str], int] = {}
        running: dict[str, int] = {}
        waiting: dict[str, int] = {}
        for instance in self.models.instances:
            counts[(instance.name, instance.status)] = counts.get((instance.name, instance.status), 0) + 1
            running[instance.name] = running.get(instance.name, 0) + instance.active
            slots = getattr(instance.backend, "concurrency", None) or 1
            waiting[instance.name] = waiting.get(instance.name, 0) + max(0, instance.active - slots)
        for (name, status), n in counts.items():
            state.add_metric([name, status], n)
        for name in running:
            active.add_metric([name], running[name])
            queued.add_metric([name], waiting[name])
        yield from (state, active, queued)
        yield from self._engine_counters()

    def _engine_counters(self):
        """``Backend.engine_stats`` of every instance whose engine steps a batch (instance: its position among
        the model's instances). Counters restart from 0 when a worker restarts."""
        families = {key: CounterMetricFamily(f"gallama_engine_{key}", text, labels=["model", "instance"])
                    for key, text in _ENGINE_COUNTERS.items()}
        seen: dict[str, int] = {}
        for instance in self.models.instances:
            index = seen[instance.name] = seen.get(instance.name, -1) + 1
            stats = instance.backend.engine_stats() if instance.backend is not None else None
            for key, family in families.items():
                if stats and key in stats:
                    family.add_metric([instance.name, str(index)], float(stats[key]))
        yield from (family for family in families.values() if family.samples)


_ENGINE_COUNTERS = {
    "steps": "Batched engine steps that advanced at least one job",
    "step_seconds": "Time inside the engine's steps",
    "job_steps": "Jobs advanced, summed over steps (divided by steps: the mean batch)",
    "delivery_seconds": "gallama's own work on the engine thread between two steps (handing results on)",
    "admissions": "Times new jobs were handed to the engine (jobs arriving between two steps go in together)",
    "jobs": "Jobs enqueued into the engine",
    "queue_seconds": "Time jobs waited, from their submission to the engine to their enqueue (a running step's end)",
    "first_tokens": "Jobs that got their first token",
    "first_token_seconds": "Time from a job's submission to the engine to the end of the step that gave its first "
                           "token (prefill included)",
}


class Telemetry:
    def __init__(self, models, log_prompts: bool = False):
        self.registry = CollectorRegistry(auto_describe=True)
        self.log_prompts = log_prompts
        r = self.registry
        self.requests = Counter("gallama_requests", "HTTP requests", ["route", "model", "status"], registry=r)
        self.duration = Histogram("gallama_request_duration_seconds", "Request duration, to the last byte",
                                  ["route", "model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("gallama_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.completion_tokens = Counter("gallama_completion_tokens", "Tokens generated", ["model"], registry=r)
        self.ttft = Histogram("gallama_time_to_first_token_seconds", "Time from a request's arrival at the front "
                              "to its first generated text", ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.preparation = Histogram(
            "gallama_request_preparation_seconds", "Time from a request's arrival at the front to its hand-off to "
            "the model's engine (reading, validation, prompt rendering, request hooks)", ["model"],
            buckets=_ITL_BUCKETS, registry=r)
        self.itl = Histogram("gallama_inter_token_latency_seconds", "Time between two streamed chunks", ["model"],
                             buckets=_ITL_BUCKETS, registry=r)
        r.register(_ModelStates(models))

    def record(self, method: str, route: str, status: int, duration: float, stats: dict[str, Any],
               error: str | None) -> None:
        model = stats.get("model") or ""
        self.requests.labels(route, model, str(status)).inc()
        self.duration.labels(route, model).observe(duration)
        if stats.get("prompt_tokens"):
            self.prompt_tokens.labels(model).inc(stats["prompt_tokens"])
        if stats.get("completion_tokens"):
            self.completion_tokens.labels(model).inc(stats["completion_tokens"])
        arrived, dispatched, first = stats["arrived"], stats.get("dispatched_at"), stats.get("first_token_at")
        ttft = None if first is None else first - arrived
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
        if dispatched is not None:
            self.preparation.labels(model).observe(dispatched - arrived)
        parts = [f"request {stats.get('request_id') or stats['id']}", f"{method} {route}", f"status={status}"]
        if model:
            parts.append(f"model={model}")
        if stats.get("prompt_tokens") is not None or stats.get("completion_tokens") is not None:
            parts.append(f"tokens={stats.get('prompt_tokens') or 0}+{stats.get('completion_tokens') or 0}")
        if ttft is not None:
            parts.append(f"ttft={1000 * ttft:.0f}ms")
        parts.append(f"duration={1000 * duration:.0f}ms")
        if error:
            parts.append(f"error={error!r}")
        if self.log_prompts and stats.get("prompt") is not None:
            parts.append(f"prompt={stats['prompt']!r}")
        level = logging.DEBUG if route == "/health" else logging.WARNING if status >= 500 else logging.INFO
        log.log(level, " ".join(parts))  # health checks (polled by load balancers) only at --log-level debug


class RequestLogMiddleware:
    """Pure ASGI: times each request to its last byte, then records it (log line and metrics)."""

    def __init__(self, app, telemetry: Telemetry):
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        stats: dict[str, Any] = {"id": uuid.uuid4().hex[:12], "arrived": started}
        token = request_stats.set(stats)
        status, error_body = 500, b""

        async def recording_send(message):
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400 and len(error_body) < 4096:
                error_body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            request_stats.reset(token)
            error = None
            if status >= 400:
                try:
                    error = json.loads(error_body)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    error = None
            matched = scope.get("route")
            route = getattr(matched, "path", None) or "unmatched"  # never the raw path: labels stay bounded
            self.telemetry.record(scope["method"], route, status, time.perf_counter() - started, stats, error)
