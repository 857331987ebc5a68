"""A loopback callback receiver for the tasks' tests: records every request, answers as told per path,
and can go down and come back on its own port."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.service_process import free_port

# Test secrets: Standard Webhooks' own format, `whsec_` + base64 of 24 bytes.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_c2VjcmV0LWJlZm9yZS10aGUtcm90YXRpb24="


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    # path -> (status, extra headers); unknown paths answer 200.
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def by_path(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = defaultdict(list)
        for request in self.received:
            grouped[request.path].append(request)
        return grouped

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, *, path: str | None = None, within: float = 30.0) -> None:
        """Until `count` requests (to `path`, if given) arrived."""

        def enough() -> bool:
            return sum(path is None or r.path == path for r in self.received) >= count

        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(enough)

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.path, dict(request.headers), await request.read()))
        async with self._arrived:
            self._arrived.notify_all()
        status, headers = self.answers.get(request.path, (200, {}))
        return web.Response(status=status, headers=headers)
