"""Circuit transitions of running gateways, from their Prometheus `/metrics`, polled.

Two sources, per gateway: the `moderation_circuit_state` gauge (0 closed, 1 half-open, 2 open) of each
backend, where every change between polls is one transition (all that a gateway before issue 22
exports; a circuit stays open for seconds, far longer than a poll), and the
`moderation_circuit_transitions_total` counter where the gateway has it, which also counts changes too
quick for a poll. A gateway's transitions are the larger of the two: the gauge can only miss some.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from bench.polling import polled

POLL_INTERVAL = 0.2
READ_TIMEOUT = 2.0
GAUGE = "moderation_circuit_state"
COUNTER = "moderation_circuit_transitions_total"


def metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


@dataclass(frozen=True)
class Circuits:
    # The gauge's value by its labels.
    states: dict[str, float]
    # The counter summed over its labels; 0 before the first transition (it is not exported until then).
    transitions: float


def read_circuits(text: str) -> Circuits:
    """The circuit gauge and transitions counter from a Prometheus text exposition."""
    states, transitions = {}, 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in (GAUGE, COUNTER):
            labels, _, value = line.rpartition(" ")
            if name == GAUGE:
                states[labels] = float(value)
            else:
                transitions += float(value)
    return Circuits(states, transitions)


def _read(url: str) -> Circuits:
    with urllib.request.urlopen(url, timeout=READ_TIMEOUT) as response:
        return read_circuits(response.read().decode())


class CircuitWatch:
    def __init__(self, urls: Sequence[str]) -> None:
        self._urls = list(urls)
        self._states: dict[tuple[str, str], float] = {}
        self._changes: Counter[str] = Counter()
        self._counted: dict[str, tuple[float, float]] = {}

    @property
    def transitions(self) -> int:
        counted = {url: latest - first for url, (first, latest) in self._counted.items()}
        return sum(max(self._changes[url], int(counted.get(url, 0))) for url in self._urls)

    async def poll(self) -> None:
        for url in self._urls:
            try:
                circuits = await asyncio.to_thread(_read, url)
            except OSError:
                continue  # a busy gateway answers the next poll
            first, _ = self._counted.setdefault(url, (circuits.transitions, circuits.transitions))
            self._counted[url] = (first, circuits.transitions)
            for labels, value in circuits.states.items():
                if self._states.setdefault((url, labels), value) != value:
                    self._changes[url] += 1
                    self._states[url, labels] = value


@contextlib.asynccontextmanager
async def watch_circuits(urls: Sequence[str]) -> AsyncIterator[CircuitWatch]:
    """Counts transitions on every gateway of `urls` (their /metrics) until the block ends."""
    watch = CircuitWatch(urls)
    async with polled(watch.poll, POLL_INTERVAL):
        yield watch
