"""/metrics of the app (in process, echo backends): the engine counters of backends whose engine steps a batch."""

from __future__ import annotations


def _engine_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("gallama_engine_")]


async def test_metrics_show_the_engine_counters_of_backends_that_keep_them(client):
    instances = {instance.name: instance for instance in client.state.models.instances}
    assert _engine_lines((await client.get("/metrics")).text) == []  # echo engines keep none
    backend = instances["echo-a"].backend
    asked = []

    async def ping(timeout):  # a worker's answer refreshes the counters (RemoteBackend.ping)
        asked.append(timeout)
        backend.stats = {"steps": 10, "step_seconds": 0.5, "job_steps": 40, "delivery_seconds": 0.01,
                         "admissions": 3, "jobs": 4, "queue_seconds": 0.02, "first_tokens": 4,
                         "first_token_seconds": 0.2}

    backend.ping = ping
    backend.engine_stats = lambda: getattr(backend, "stats", None)
    lines = _engine_lines((await client.get("/metrics")).text)
    assert asked  # /metrics asked the worker for counters as of now
    assert sorted(lines) == [
        'gallama_engine_admissions_total{instance="0",model="echo-a"} 3.0',
        'gallama_engine_delivery_seconds_total{instance="0",model="echo-a"} 0.01',
        'gallama_engine_first_token_seconds_total{instance="0",model="echo-a"} 0.2',
        'gallama_engine_first_tokens_total{instance="0",model="echo-a"} 4.0',
        'gallama_engine_job_steps_total{instance="0",model="echo-a"} 40.0',
        'gallama_engine_jobs_total{instance="0",model="echo-a"} 4.0',
        'gallama_engine_queue_seconds_total{instance="0",model="echo-a"} 0.02',
        'gallama_engine_step_seconds_total{instance="0",model="echo-a"} 0.5',
        'gallama_engine_steps_total{instance="0",model="echo-a"} 10.0',
    ]


async def test_a_worker_that_does_not_answer_keeps_metrics_answering(client):
    import asyncio

    backend = client.state.models.instances[0].backend

    async def ping(timeout):
        await asyncio.sleep(3600)

    backend.ping = ping
    backend.engine_stats = lambda: {"steps": 1}
    response = await asyncio.wait_for(client.get("/metrics"), 10)
    assert response.status_code == 200 and "gallama_engine_steps_total" in response.text
