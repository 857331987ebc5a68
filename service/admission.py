"""Admission: the server's cap on moderation calls, and a bulkhead per caller inside it.

A call is admitted while the server runs fewer than `max_calls` moderation calls and its caller
fewer than `per_caller`; otherwise it gets RESOURCE_EXHAUSTED at once (`SERVER_OVER_CAPACITY`,
`CALLER_OVER_CAPACITY`, each with RetryInfo), one access-log line and one count in
`moderation.admission.refusals`. An admitted caller's stream items also wait for room in its own
bulkhead (`per_caller` items in flight) before the server-wide item slots, so one caller's flood
of calls or items leaves room for the others.

The caller is `service.auth.CALLER`. With authentication off it is "", and the bulkhead is keyed on
the peer's address without its port instead: a client gets a new port with every connection it
opens, so keying on the port would give a flood one bulkhead per connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from google.rpc import error_details_pb2, status_pb2

from service import errors
from service.auth import CALLER
from service.logs import log_access
from service.telemetry import Metrics

__all__ = ["Admission", "Ticket", "caller_key"]

RESOURCE_EXHAUSTED: Final = grpc.StatusCode.RESOURCE_EXHAUSTED.name


def caller_key(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Whose bulkhead a call runs in: the authenticated caller, else the peer's address."""
    caller = CALLER.get()
    if caller:
        return caller
    # "ipv4:10.0.0.7:51234", "ipv6:[::1]:51234"; "unix:/run/gw.sock" has no port.
    peer = str(context.peer() or "")
    address, _, port = peer.rpartition(":")
    return f"peer:{address}" if port.isdigit() and address else f"peer:{peer}"


@dataclass
class _Bulkhead:
    items: asyncio.Semaphore
    calls: int = 0


@dataclass
class Ticket:
    """An admitted call; leaving it (a `with` block) gives its room back."""

    admission: Admission
    key: str
    # The caller's stream items in flight, across all its calls.
    items: asyncio.Semaphore
    _left: bool = field(default=False, repr=False)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_: object) -> None:
        if not self._left:
            self._left = True
            self.admission._leave(self.key)


class Admission:
    def __init__(self, *, max_calls: int, per_caller: int, metrics: Metrics) -> None:
        self._max_calls = max_calls
        self._per_caller = per_caller
        self._metrics = metrics
        # Built once: under a flood every call gets one of these (and nothing in them changes).
        self._server_full = _Refusal(errors.over_capacity_status(max_calls, per_caller=False))
        self._caller_full = _Refusal(errors.over_capacity_status(per_caller, per_caller=True))
        self._calls = 0
        # Only callers with a call in flight have an entry, so the map is bounded by `max_calls`.
        self._bulkheads: dict[str, _Bulkhead] = {}

    def admit(self, method: str, key: str) -> Ticket | status_pb2.Status:
        """The call's ticket, or the status refusing it (already logged and counted)."""
        bulkhead = self._bulkheads.get(key)
        if self._calls >= self._max_calls:
            return self._refused(method, self._server_full)
        if bulkhead is not None and bulkhead.calls >= self._per_caller:
            return self._refused(method, self._caller_full)
        if bulkhead is None:
            bulkhead = self._bulkheads[key] = _Bulkhead(asyncio.Semaphore(self._per_caller))
        bulkhead.calls += 1
        self._calls += 1
        return Ticket(self, key, bulkhead.items)

    def _leave(self, key: str) -> None:
        self._calls -= 1
        bulkhead = self._bulkheads[key]
        bulkhead.calls -= 1
        if bulkhead.calls == 0:
            # Its items are all answered: they belong to its calls, which have all ended.
            del self._bulkheads[key]

    def _refused(self, method: str, refusal: _Refusal) -> status_pb2.Status:
        reason = refusal.reason
        self._metrics.admission_refusals.add((("rpc.method", method), ("moderation.error.reason", reason)))
        log_access(method, RESOURCE_EXHAUSTED, 0.0, reason=reason)
        return refusal.status


@dataclass(frozen=True)
class _Refusal:
    status: status_pb2.Status
    reason: str = field(init=False)

    def __post_init__(self) -> None:
        # The `ErrorInfo` reason the status carries (its first detail, as every gateway status has).
        info = error_details_pb2.ErrorInfo()
        self.status.details[0].Unpack(info)
        object.__setattr__(self, "reason", str(info.reason))
