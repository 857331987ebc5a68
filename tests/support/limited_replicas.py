"""Gateway replicas (`python -m service`) against the IMS emulator's strict sliding-second limit (issue 22):
the limited emulator, two callers' tokens, a replica whose log is read as it comes, and a caller's stream
tallied item by item."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from moderation.v1.moderation_service_pb2 import StreamModerateImagesRequest

from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.client import error_label, open_channel, request, stub
from testbed.processes import free_port
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.service_process import start_service, stop_gateway, wait_serving

BUDGET = 40
LATENCY = 0.3
IMAGE = make_png(64, 64)
# How the emulator stamps each arrival for its limiter: when the request line is read (an idle front
# end), or after the body, in the handler thread (a loaded one: later and in bunches). test_load_budget's
# many-callers test runs in both; its fairness layouts and refusal tests in the first (the bench runs both).
ARRIVAL_MODES = ("request-line", "after-body")
IDLE_FRONT_END = ("request-line",)
TOKENS = {"caller-a": "token-of-caller-a-0123456789", "caller-b": "token-of-caller-b-0123456789"}


def emulator_config(arrival: str, jitter: float = 0.02) -> EmulatorConfig:
    return EmulatorConfig(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        latency=LATENCY,
        qps_limit=BUDGET,
        arrival_jitter=jitter,
        arrival_stamp=arrival,
    )


@pytest.fixture(params=IDLE_FRONT_END)
def limited(request: pytest.FixtureRequest) -> Iterator[ImsEmulator]:
    with ImsEmulator(emulator_config(request.param), host="127.0.0.1", port=0) as emulator:
        yield emulator


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text("".join(f"{name} {token}\n" for name, token in TOKENS.items()))
    return path


@dataclass
class Replica:
    address: str
    # Its log, read as it comes (a full pipe would stall the process).
    lines: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def replica(emulator: ImsEmulator, tokens: Path, **settings: str) -> AsyncIterator[Replica]:
    port = free_port()
    process = start_service(
        emulator,
        port,
        IMS_QPS=str(BUDGET),
        MODERATION_LOG_FORMAT="text",
        MODERATION_AUTH_TOKENS_FILE=str(tokens),
        **settings,
    )
    running = Replica(f"127.0.0.1:{port}")
    reader = threading.Thread(target=_read_lines, args=(process, running.lines), daemon=True)
    reader.start()
    try:
        async with open_channel(running.address) as channel:
            await wait_serving(channel)
        yield running
    finally:
        await stop_gateway(process)
        await asyncio.to_thread(reader.join, 5)


def _read_lines(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    lines.extend(process.stdout)


def auth(caller: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[caller]}"),)


@dataclass
class Tally:
    """What one caller's streams got: each index's answers, the errors, when each result came."""

    answers: Counter[tuple[int | str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    result_times: list[float] = field(default_factory=list)
    call_errors: list[str] = field(default_factory=list)

    def answered_once(self, streams: int, items: int) -> bool:
        expected = {(s, i) for s in range(streams) for i in range(items)}
        return set(self.answers) == expected and set(self.answers.values()) == {1}


async def stream(address: str, caller: str, number: int | str, items: int, tally: Tally) -> None:
    loop = asyncio.get_running_loop()

    async def requests() -> AsyncIterator[StreamModerateImagesRequest]:
        for index in range(items):
            yield StreamModerateImagesRequest(
                correlation_id=f"{caller}-{number}-{index}", request=request(IMAGE, f"{caller}-{index}")
            )

    async with open_channel(address) as channel:
        call = stub(channel).StreamModerateImages(requests(), metadata=auth(caller), timeout=120)
        try:
            async for answer in call:
                tally.answers[(number, answer.index)] += 1
                if answer.HasField("result"):
                    tally.result_times.append(loop.time())
                else:
                    tally.errors[error_label(answer.error)] += 1
        except grpc.aio.AioRpcError as error:
            tally.call_errors.append(f"{error.code().name}: {error.details()}")
