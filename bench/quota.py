"""What quotas cost: the Redis commands and the latency they add per billed call.

One gateway process on a real redis-server (fleet mode) against the emulator, the same calls twice:
with a hard quota governing the caller (too large to refuse anything) and without one. Every call is
billed (distinct images, the cache off). Redis's INFO commandstats, before and after each phase, gives
the calls a client sent (scripts, MGET; the commands a script runs are counted apart, under their own
names), and MONITOR, over the phase with a quota, the calls that name a quota key: the quotas' own round
trips (one script a call). The difference of the two phases' totals is no measure of them: the rate
budget's heartbeats and reservations vary from phase to phase by a few hundredths a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
import redis

from bench.latency import LatencySample
from bench.sections import Progress
from emulator.images import make_png
from service.quotas.guard import KEY_PREFIX as QUOTA_KEY_PREFIX
from testbed.client import open_channel, request, stub
from testbed.processes import Credentials, emulator, serve
from testbed.redis_server import redis_server

__all__ = ["CALLS", "CONCURRENCY", "EMULATOR_LATENCY", "QUICK_CALLS", "Phase", "QuotaResult", "measure"]

CALLS = 1_000
QUICK_CALLS = 200
CONCURRENCY = 16
EMULATOR_LATENCY = 0.02
CALLER = "bench"


@dataclass(frozen=True)
class Phase:
    billed: int
    failed: int
    # Calls clients sent (each its own round trip, nothing here pipelines them), and every command run.
    round_trips: int
    redis_commands: int
    # Calls clients sent that name a quota key.
    quota_round_trips: int
    latency: LatencySample

    @property
    def round_trips_per_call(self) -> float:
        return self.round_trips / self.billed if self.billed else float("nan")


@dataclass(frozen=True)
class QuotaResult:
    governed: Phase
    ungoverned: Phase

    @property
    def added_round_trips_per_billed_call(self) -> float:
        return (
            self.governed.quota_round_trips / self.governed.billed if self.governed.billed else float("nan")
        )


# What a client sends itself; GET, INCR, EXPIRE ... are also what scripts run.
_CLIENT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "mget", "script", "ping", "time")


def _counts(url: str) -> tuple[int, int]:
    """(calls clients sent, every command run) so far."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
        total = int(client.info("stats")["total_commands_processed"])
    sent = sum(
        int(v["calls"])
        for k, v in stats.items()
        if k.removeprefix("cmdstat_").split("|")[0] in _CLIENT_COMMANDS
    )
    return sent, total


# Sent once a phase ends: the MONITOR watching it has seen everything before it once it shows this.
_END_OF_PHASE = "quota-bench-end-of-phase"


@contextlib.contextmanager
def _quota_round_trips(url: str) -> Iterator[list[int]]:
    """The calls clients send that name a quota key, counted once the block ends from what `redis-cli
    monitor` (its own process: parsing every command here would slow the calls measured) printed; a
    script's own commands (`[0 lua]`) are no round trips, and are left out."""
    counted = [0]
    executable = shutil.which("redis-cli")
    if executable is None:
        raise RuntimeError("redis-cli is not installed: run `make system-deps` (Debian's redis-server)")
    with tempfile.TemporaryFile() as printed:
        monitor = subprocess.Popen([executable, "-u", url, "monitor"], stdout=printed)
        try:
            _printed_since(printed, 0, "OK")
            start = printed.tell()
            yield counted
            with redis.Redis.from_url(url) as client:
                client.echo(_END_OF_PHASE)
            lines = _printed_since(printed, start, _END_OF_PHASE).splitlines()
        finally:
            monitor.terminate()
            monitor.wait(10)
    counted[0] = sum(QUOTA_KEY_PREFIX in line and "[0 lua]" not in line for line in lines)


def _printed_since(printed: IO[bytes], offset: int, marker: str, within: float = 30.0) -> str:
    """What was printed from `offset` once it holds `marker`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        printed.seek(offset)
        text = printed.read().decode(errors="replace")
        if marker in text:
            printed.seek(0, 2)
            return text
        time.sleep(0.05)
    raise RuntimeError(f"redis-cli monitor did not print {marker!r} within {within:.0f} s")


@contextlib.contextmanager
def _configuration(emulator_url: str, quotas: str) -> Iterator[tuple[dict[str, str], str]]:
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="quota-bench-") as folder:
        routes, tokens = Path(folder) / "routes.toml", Path(folder) / "tokens"
        routes.write_text(
            '[backends.cloud]\ntype = "tencent"\nsecret_id_env = "TENCENTCLOUD_SECRET_ID"\n'
            f'secret_key_env = "TENCENTCLOUD_SECRET_KEY"\nendpoint = "{emulator_url}"\nqps = 1000\n\n'
            f'[default]\nchain = ["cloud"]\n\n{quotas}',
            encoding="utf-8",
        )
        tokens.write_text(f"{CALLER} {token}\n", encoding="utf-8")
        yield {"MODERATION_ROUTES": str(routes), "MODERATION_AUTH_TOKENS_FILE": str(tokens)}, token


async def _calls(address: str, token: str, calls: int) -> tuple[LatencySample, int]:
    sample, images = LatencySample(), iter(range(calls))
    metadata = (("authorization", f"Bearer {token}"),)
    async with open_channel(address) as channel:
        moderation = stub(channel)

        async def caller() -> None:
            for index in images:
                image = make_png(64, 64, f"quota-bench-{index}-{secrets.token_hex(4)}")
                started = time.perf_counter()
                try:
                    await moderation.ModerateImage(request(image, str(index)), timeout=15, metadata=metadata)
                except grpc.aio.AioRpcError:
                    sample.failures += 1
                    continue
                sample.seconds.append(time.perf_counter() - started)

        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return sample, len(sample.seconds)


async def _phase(
    credentials: Credentials, emulator_url: str, redis_url: str, quotas: str, calls: int
) -> Phase:
    with (
        _configuration(emulator_url, quotas) as (settings, token),
        serve(
            TENCENTCLOUD_SECRET_ID=credentials.secret_id,
            TENCENTCLOUD_SECRET_KEY=credentials.secret_key,
            MODERATION_REDIS_URL=redis_url,
            **settings,
        ) as gateway,
    ):
        # Warm: connections and scripts loaded, so the phase counts the steady state.
        await _calls(gateway.address, token, CONCURRENCY)
        before = _counts(redis_url)
        with _quota_round_trips(redis_url) as quota_round_trips:
            sample, billed = await _calls(gateway.address, token, calls)
        after = _counts(redis_url)
    return Phase(
        billed, sample.failures, after[0] - before[0], after[1] - before[1], quota_round_trips[0], sample
    )


async def measure(calls: int, progress: Progress) -> QuotaResult:
    credentials = Credentials.fresh()
    with emulator(credentials, latency=EMULATOR_LATENCY, qps=None) as ims, redis_server() as server:
        progress(f"quota: {calls} calls with a quota")
        governed = await _phase(
            credentials, ims.address, server.url, f"[quotas.{CALLER}]\nper_day = 1000000000\n", calls
        )
        progress(f"quota: {calls} calls without")
        ungoverned = await _phase(credentials, ims.address, server.url, "", calls)
    return QuotaResult(governed, ungoverned)
