"""One hostile run: a gateway process under each attack in turn, watched by canaries from another caller.

The gateway serves two routes: the default on the embedded local backend (where the image bombs land)
and `canary_cloud` on the tencent backend against the IMS emulator. Callers authenticate with bearer
tokens, so the attacker and the canaries are different callers, as they would be in a mesh. During each
attack two canaries (one per backend) call once every `CANARY_INTERVAL` with a 5 s deadline, health is
polled, and the gateway's RSS is sampled from /proc; 30 s after the attack its RSS is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from bench.latency import LatencySample
from bench.sections import Progress
from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed import processes
from testbed.client import MAX_MESSAGE_BYTES
from testbed.fileserver import serve_files

CANARY_INTERVAL = 0.2
CANARY_DEADLINE = 5.0
HEALTH_INTERVAL = 0.25
RSS_INTERVAL = 0.05
# How long after an attack its memory must be back near the baseline.
SETTLE = 30.0
CLOUD_BIZ_TYPE = "canary_cloud"
# Routed to an IMS emulator in this process whose answers each upstream attack makes hostile.
HOSTILE_BIZ_TYPE = "hostile_upstream"
ROUTES = f"""
[backends.local]
type = "local"

[backends.cloud]
type = "tencent"
endpoint = "{{emulator}}"
secret_id_env = "BENCH_SECRET_ID"
secret_key_env = "BENCH_SECRET_KEY"

[backends.hostile]
type = "tencent"
endpoint = "{{hostile}}"
secret_id_env = "BENCH_SECRET_ID"
secret_key_env = "BENCH_SECRET_KEY"

[[routes]]
biz_types = ["{CLOUD_BIZ_TYPE}"]
chain = ["cloud"]

[[routes]]
biz_types = ["{HOSTILE_BIZ_TYPE}"]
chain = ["hostile"]

[default]
chain = ["local"]
"""


@dataclass(frozen=True)
class Target:
    """The gateway under attack, as callers see it."""

    address: str
    attacker_token: str
    canary_token: str
    files_url: str
    # The backend account's key pair: no answer may show either.
    credentials: processes.Credentials
    # The emulator behind `HOSTILE_BIZ_TYPE`; attacks set its `config.hostile`.
    hostile: ImsEmulator

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            self.address,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )

    @property
    def attacker(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.attacker_token}"),)


# What an attack returns: the status code names its calls ended with ("OK" included).
AttackRun = Callable[[Target], Awaitable[Sequence[str]]]


@dataclass(frozen=True)
class Attack:
    name: str
    run: AttackRun
    # Codes the attacker may get; anything else (UNKNOWN, INTERNAL, CANCELLED unasked) is unmapped.
    mapped: frozenset[str]


@dataclass
class AttackResult:
    name: str
    codes: Counter[str]
    mapped: bool
    canary_local: LatencySample
    canary_cloud: LatencySample
    baseline_rss: int
    peak_rss: int
    settled_rss: int
    # 1 s buckets where health disagreed with what the canaries saw.
    health_disagreements: int
    health_buckets: int
    seconds: float


@dataclass
class HostileResult:
    attacks: list[AttackResult] = field(default_factory=list)

    def attack(self, name: str) -> AttackResult | None:
        return next((a for a in self.attacks if a.name == name), None)


@dataclass
class _Watch:
    """What the canaries, the health poller and the RSS sampler saw during one attack."""

    local: LatencySample = field(default_factory=LatencySample)
    cloud: LatencySample = field(default_factory=LatencySample)
    # (monotonic time a canary call ended, whether it succeeded)
    canary_ends: list[tuple[float, bool]] = field(default_factory=list)
    health: list[tuple[float, bool]] = field(default_factory=list)
    peak_rss: int = 0


async def measure(attacks: Sequence[Attack], progress: Progress) -> HostileResult:
    credentials = processes.Credentials.fresh()
    result = HostileResult()
    with (
        processes.emulator(credentials) as emulator,
        _gateway(credentials, emulator.address) as (gateway, target),
    ):
        await _warm_up(target)
        baseline = gateway.status_bytes("VmRSS")
        progress(f"hostile: gateway warm, RSS {baseline / 2**20:.0f} MiB")
        for attack in attacks:
            progress(f"hostile: {attack.name}")
            result.attacks.append(await _run_attack(attack, gateway, target, baseline))
            if gateway.process.poll() is not None:
                raise RuntimeError(f"the gateway exited during {attack.name}: see {gateway.log}")
    return result


@contextlib.contextmanager
def _gateway(
    credentials: processes.Credentials, emulator_url: str
) -> Iterator[tuple[processes.Running, Target]]:
    attacker, canary = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    config = EmulatorConfig(secret_id=credentials.secret_id, secret_key=credentials.secret_key)
    with (
        tempfile.TemporaryDirectory() as folder,
        serve_files(_FILES) as files_url,
        ImsEmulator(config, host="127.0.0.1", port=0) as hostile,
    ):
        routes = Path(folder, "routes.toml")
        routes.write_text(ROUTES.format(emulator=emulator_url, hostile=hostile.url), encoding="utf-8")
        tokens = Path(folder, "tokens")
        tokens.write_text(f"attacker {attacker}\ncanary {canary}\n", encoding="utf-8")
        with processes.serve(
            MODERATION_ROUTES=str(routes),
            MODERATION_AUTH_TOKENS_FILE=str(tokens),
            MODERATION_FETCH_ALLOW_NETWORKS="127.0.0.0/8",
            MODERATION_CALLER_SHARE="0.5",
            BENCH_SECRET_ID=credentials.secret_id,
            BENCH_SECRET_KEY=credentials.secret_key,
        ) as gateway:
            yield gateway, Target(gateway.address, attacker, canary, files_url, credentials, hostile)


# Path -> body for the loopback file server; attacks register their bombs before the run starts.
_FILES: dict[str, bytes] = {}


def serve_bomb(path: str, body: bytes) -> None:
    _FILES[path] = body


CANARY_IMAGE = make_png(256, 256)


async def _warm_up(target: Target) -> None:
    watch = _Watch()
    async with target.channel() as channel:
        for _ in range(3):
            await _canary_call(channel, target, "", watch.local, watch)
            await _canary_call(channel, target, CLOUD_BIZ_TYPE, watch.cloud, watch)


async def _run_attack(
    attack: Attack, gateway: processes.Running, target: Target, baseline: int
) -> AttackResult:
    watch = _Watch(peak_rss=gateway.status_bytes("VmRSS"))
    started = time.monotonic()
    async with _watching(gateway, target, watch):
        codes = await attack.run(target)
        # The canaries go on a moment longer: an attack's work may outlive its calls.
        await asyncio.sleep(2.0)
    seconds = time.monotonic() - started
    await asyncio.sleep(SETTLE)
    disagreements, buckets = _health_disagreements(watch)
    counted = Counter(codes)
    return AttackResult(
        name=attack.name,
        codes=counted,
        mapped=bool(counted) and set(counted) <= attack.mapped,
        canary_local=watch.local,
        canary_cloud=watch.cloud,
        baseline_rss=baseline,
        peak_rss=watch.peak_rss,
        settled_rss=gateway.status_bytes("VmRSS"),
        health_disagreements=disagreements,
        health_buckets=buckets,
        seconds=seconds,
    )


@contextlib.asynccontextmanager
async def _watching(gateway: processes.Running, target: Target, watch: _Watch) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with target.channel() as local, target.channel() as cloud, target.channel() as health:
        tasks = [
            asyncio.create_task(_canary(local, target, "", watch.local, watch, stop)),
            asyncio.create_task(_canary(cloud, target, CLOUD_BIZ_TYPE, watch.cloud, watch, stop)),
            asyncio.create_task(_poll_health(health, watch, stop)),
            asyncio.create_task(_sample_rss(gateway, watch, stop)),
        ]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def _canary(
    channel: grpc.aio.Channel,
    target: Target,
    biz_type: str,
    sample: LatencySample,
    watch: _Watch,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        await _canary_call(channel, target, biz_type, sample, watch)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CANARY_INTERVAL)


async def _canary_call(
    channel: grpc.aio.Channel, target: Target, biz_type: str, sample: LatencySample, watch: _Watch
) -> None:
    method = channel.unary_unary(
        "/moderation.v1.ModerationService/ModerateImage",
        request_serializer=ModerateImageRequest.SerializeToString,
        response_deserializer=lambda data: data,
    )
    request = ModerateImageRequest(content=CANARY_IMAGE, biz_type=biz_type, data_id="canary")
    started = time.perf_counter()
    try:
        await method(
            request,
            timeout=CANARY_DEADLINE,
            metadata=(("authorization", f"Bearer {target.canary_token}"),),
        )
    except grpc.aio.AioRpcError:
        sample.failures += 1
        watch.canary_ends.append((time.monotonic(), False))
        return
    sample.seconds.append(time.perf_counter() - started)
    watch.canary_ends.append((time.monotonic(), True))


async def _poll_health(channel: grpc.aio.Channel, watch: _Watch, stop: asyncio.Event) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    while not stop.is_set():
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            serving = answer.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            serving = False
        watch.health.append((time.monotonic(), serving))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEALTH_INTERVAL)


async def _sample_rss(gateway: processes.Running, watch: _Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(FileNotFoundError):
            watch.peak_rss = max(watch.peak_rss, gateway.status_bytes("VmRSS"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_INTERVAL)


def _health_disagreements(watch: _Watch) -> tuple[int, int]:
    """Per 1 s bucket: health SERVING while every canary call that ended failed, or NOT_SERVING while
    one succeeded. Buckets where no canary call ended say nothing and are not counted."""
    if not watch.canary_ends:
        return 0, 0
    origin = min(t for t, _ in watch.canary_ends)
    canary: dict[int, list[bool]] = {}
    for ended, ok in watch.canary_ends:
        canary.setdefault(math.floor(ended - origin), []).append(ok)
    health: dict[int, bool] = {}
    for checked, serving in watch.health:
        health[math.floor(checked - origin)] = serving
    disagreements = sum(
        1 for bucket, outcomes in canary.items() if bucket in health and health[bucket] != any(outcomes)
    )
    return disagreements, sum(1 for bucket in canary if bucket in health)
