"""Load: concurrent streams, and a client that disconnects mid-stream."""

from __future__ import annotations

import asyncio
import json

import httpx


async def _stream(client: httpx.AsyncClient, body: dict) -> list[dict]:
    chunks = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
            elif line == "data: [DONE]":
                chunks.append({"done": True})
    return chunks


async def test_eight_concurrent_streams_complete(multi_server):
    prompts = [f"Tell me fact number {i} about llamas." for i in range(8)]
    async with httpx.AsyncClient(base_url=multi_server, timeout=300) as http:
        results = await asyncio.gather(*[
            _stream(http, {"model": "smol", "stream": True, "max_tokens": 40, "seed": i,
                           "messages": [{"role": "user", "content": p}]}) for i, p in enumerate(prompts)])
    for chunks in results:
        assert chunks[-1] == {"done": True}
        body = chunks[:-1]
        assert len({c["id"] for c in body}) == 1  # one coherent response per stream
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body)
        assert text.strip()
        assert body[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert len({c[1]["id"] for c in results}) == 8


async def test_disconnect_frees_slot_and_spares_others(multi_server):
    """smol-small has 2 slots. A long stream B runs; stream A disconnects early. Two short requests must then
    both run while B is still going: only possible if A's slot was freed."""
    long_body = {"model": "smol-small", "stream": True, "max_tokens": 200, "temperature": 0,
                 "messages": [{"role": "user", "content": "List words."}],
                 "regex_pattern": "(word ){200}"}
    events: list[str] = []
    async with httpx.AsyncClient(base_url=multi_server, timeout=300) as http:
        async def stream_b():
            chunks = await _stream(http, long_body)
            events.append("B done")
            return chunks

        async def stream_a_then_leave():
            async with http.stream("POST", "/v1/chat/completions", json=long_body) as r:
                seen = 0
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        seen += 1
                    if seen >= 3:
                        break  # the client goes away mid-stream
            events.append("A left")

        async def short(tag):
            r = await http.post("/v1/chat/completions", json={
                "model": "smol-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            events.append(tag)

        b = asyncio.create_task(stream_b())
        await stream_a_then_leave()
        await asyncio.gather(short("C done"), short("D done"))
        b_chunks = await b
    assert events.index("C done") < events.index("B done")
    assert events.index("D done") < events.index("B done")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in b_chunks[:-1] if c.get("choices"))
    assert text.startswith("word word") and b_chunks[-1] == {"done": True}
