"""Admission's bookkeeping: the caps, the bulkheads, and whose bulkhead a call runs in."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2, status_pb2

from service.admission import Admission, Ticket, caller_key
from service.auth import CALLER
from service.telemetry import Telemetry


def _admission(max_calls: int = 3, per_caller: int = 2) -> Admission:
    return Admission(max_calls=max_calls, per_caller=per_caller, metrics=Telemetry.off().metrics)


def _reason(outcome: Ticket | status_pb2.Status) -> str:
    assert isinstance(outcome, status_pb2.Status), outcome
    info = error_details_pb2.ErrorInfo()
    assert outcome.details[0].Unpack(info)
    return str(info.reason)


def test_a_caller_past_its_bulkhead_is_refused_while_others_are_admitted() -> None:
    admission = _admission()
    first, second = admission.admit("ModerateImage", "a"), admission.admit("ModerateImage", "a")
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    assert _reason(admission.admit("ModerateImage", "a")) == "CALLER_OVER_CAPACITY"
    assert isinstance(admission.admit("ModerateImage", "b"), Ticket)
    assert _reason(admission.admit("ModerateImage", "c")) == "SERVER_OVER_CAPACITY"
    with first:
        pass
    assert isinstance(admission.admit("ModerateImage", "a"), Ticket)


def test_leaving_twice_gives_back_one_call_and_idle_callers_are_forgotten() -> None:
    admission = _admission(max_calls=1, per_caller=1)
    ticket = admission.admit("ModerateImage", "a")
    assert isinstance(ticket, Ticket)
    with ticket:
        pass
    with ticket:
        pass
    assert admission._bulkheads == {}
    assert isinstance(admission.admit("ModerateImage", "b"), Ticket)
    assert _reason(admission.admit("ModerateImage", "a")) == "SERVER_OVER_CAPACITY"


def test_callers_of_one_bulkhead_share_its_stream_items() -> None:
    admission = _admission()
    first, second = admission.admit("StreamModerateImages", "a"), admission.admit("BatchModerateImages", "a")
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    assert first.items is second.items


class _Peer:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:10.0.0.7:51234", "peer:ipv4:10.0.0.7"),
        ("ipv6:[::1]:40000", "peer:ipv6:[::1]"),
        ("unix:/run/gateway.sock", "peer:unix:/run/gateway.sock"),
    ],
)
def test_without_authentication_the_peer_address_without_its_port_is_the_key(peer: str, key: str) -> None:
    assert caller_key(_Peer(peer)) == key


def test_an_authenticated_caller_is_its_own_key() -> None:
    token = CALLER.set("checkout")
    try:
        assert caller_key(_Peer("ipv4:10.0.0.7:51234")) == "checkout"
    finally:
        CALLER.reset(token)
