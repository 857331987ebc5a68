"""The shared HTTP client against a real loopback server: large bodies are sliced, never altered."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from backends.http import SLICE_BYTES, SLICED_BODY_BYTES, body_payload, session_factory

Received = list[tuple[dict[str, str], bytes]]


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Received]]:
    received: Received = []

    async def record(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/", received
    await runner.cleanup()


@pytest.mark.parametrize("size", [10, SLICED_BODY_BYTES - 1, SLICED_BODY_BYTES, 7 * SLICE_BYTES * 4 + 3])
async def test_a_body_arrives_whole_with_its_length_and_unchunked(
    server: tuple[str, Received], size: int
) -> None:
    url, received = server
    body = os.urandom(size)
    sent = {"Content-Type": "application/json", "Content-Length": str(size)}
    async with session_factory(max_connections=2)() as session:
        for _ in range(2):  # the second reuses the kept-alive connection
            async with session.post(url, data=body_payload(body), headers=sent) as response:
                assert response.status == 200
    assert len(received) == 2
    for headers, content in received:
        assert content == body
        assert headers["Content-Length"] == str(size)
        assert "Transfer-Encoding" not in headers
