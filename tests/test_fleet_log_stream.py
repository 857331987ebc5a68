"""A fleet-mode gateway's whole output is the JSON log stream: one object per line, from start-up to
exit, with no library warning text among them (redis-py warned when given its synchronous Retry)."""

from __future__ import annotations

import json

import grpc

from emulator import ImsEmulator
from testbed.processes import free_port
from testbed.redis_server import RedisServer
from tests.support.service_process import start_service, wait_serving


async def test_every_line_of_a_fleet_gateway_is_json(emulator: ImsEmulator, redis: RedisServer) -> None:
    port = free_port()
    process = start_service(emulator, port, MODERATION_REDIS_URL=redis.url, MODERATION_CACHE="redis")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    lines = output.splitlines()
    assert any("serving moderation.v1.ModerationService" in json.loads(line)["message"] for line in lines)
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == []
