"""Gateways as the client library's tests address them: one or several for pick_first, a pair of which
one drains, and the image they pass."""

from __future__ import annotations

from emulator import ImsEmulator
from emulator.images import make_png
from service.server import Gateway
from tests.support.gateway import GatewayFactory

PASS = make_png(256, 256)


def address(*gateways: Gateway) -> str:
    """One gateway's address, or several for pick_first: the next one takes over when one goes away."""
    return "ipv4:" + ",".join(f"127.0.0.1:{gateway.port}" for gateway in gateways)


async def draining_pair(make_gateway: GatewayFactory, emulator: ImsEmulator) -> tuple[Gateway, Gateway]:
    """Two gateways on one emulator, slow enough that a stream is still running when the first stops."""
    emulator.config.latency = 0.3
    return await make_gateway(stream_max_in_flight=16), await make_gateway(stream_max_in_flight=16)
