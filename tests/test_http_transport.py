"""The shared HTTP client against a real loopback server: large bodies are sliced, never altered; a
backend's connections stay within its pool and close with it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, Suggestion

from backends.http import SLICE_BYTES, SLICED_BODY_BYTES, Body, body_payload, session_factory
from backends.tencent.client import ImsBackend, ImsEndpoint
from tests.support.eventually import eventually

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
    # Sent as the parts it was built from, as an image's base64 and the JSON around it are.
    parts = Body(body[: size // 3], body[size // 3 :])
    sent = {"Content-Type": "application/json", "Content-Length": str(size)}
    async with session_factory(max_connections=2)() as session:
        for _ in range(2):  # the second reuses the kept-alive connection
            async with session.post(url, data=body_payload(parts), headers=sent) as response:
                assert response.status == 200
    assert len(received) == 2
    for headers, content in received:
        assert content == body
        assert headers["Content-Length"] == str(size)
        assert "Transfer-Encoding" not in headers


async def test_a_backend_connects_no_more_than_its_pool_allows_and_closes_on_aclose() -> None:
    peers: set[tuple[str, int]] = set()
    two_arrived = asyncio.Event()

    async def answer(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        if len(peers) == 2:
            two_arrived.set()
        # Every connection stays busy until two are open: an unpooled client would open one per call.
        await two_arrived.wait()
        return web.json_response({"Response": {"Suggestion": "Pass", "RequestId": "req-1"}})

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    backend = ImsBackend(name="pooled", endpoint=ImsEndpoint(url=url), auth=None, max_connections=2)
    try:
        calls = [backend.moderate(ModerateImageRequest(content=b"x" * 64), timeout=5) for _ in range(6)]
        results = await asyncio.gather(*calls)
        assert [r.suggestion for r in results] == [Suggestion.SUGGESTION_PASS] * 6
        assert len(peers) == 2
        assert runner.server is not None
        assert runner.server.connections
        await backend.aclose()
        # The server learns of the close when the FIN arrives; it has no event to wait on.
        server = runner.server
        await eventually(lambda: not server.connections, within=5, every=0.01)
    finally:
        await backend.aclose()
        await runner.cleanup()
