"""Circuit transitions of running gateways, from their Prometheus `/metrics`: the
`moderation_circuit_state` gauge (0 closed, 1 half-open, 2 open) of each backend, polled; every change
of a replica's backend's value is one transition. A gauge is all the baseline exports, and a circuit
stays open for seconds, far longer than a poll."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator, Sequence

POLL_INTERVAL = 0.2
READ_TIMEOUT = 2.0
GAUGE = "moderation_circuit_state"


def metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


def circuit_states(text: str) -> dict[str, float]:
    """The gauge's value by its labels, from a Prometheus text exposition."""
    states = {}
    for line in text.splitlines():
        if line.startswith(GAUGE + "{"):
            labels, _, value = line.rpartition(" ")
            states[labels] = float(value)
    return states


def _read(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=READ_TIMEOUT) as response:
        return circuit_states(response.read().decode())


class CircuitWatch:
    def __init__(self, urls: Sequence[str]) -> None:
        self._urls = list(urls)
        self._last: dict[tuple[str, str], float] = {}
        self.transitions = 0

    async def poll(self) -> None:
        for url in self._urls:
            try:
                states = await asyncio.to_thread(_read, url)
            except OSError:
                continue  # a busy gateway answers the next poll
            for labels, value in states.items():
                previous = self._last.setdefault((url, labels), value)
                if value != previous:
                    self.transitions += 1
                    self._last[url, labels] = value


@contextlib.asynccontextmanager
async def watch_circuits(urls: Sequence[str]) -> AsyncIterator[CircuitWatch]:
    """Counts transitions on every gateway of `urls` (their /metrics) until the block ends."""
    watch = CircuitWatch(urls)
    await watch.poll()

    async def keep_polling() -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            await watch.poll()

    polling = asyncio.create_task(keep_polling())
    try:
        yield watch
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await watch.poll()
