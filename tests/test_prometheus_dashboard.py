"""The Grafana dashboard's queries and the alert rules, against real data: Debian's Prometheus on
loopback scrapes a real gateway process (fleet mode on a real Redis, the emulator throttling and failing
some calls) while it is under load, and every panel's PromQL returns data.

"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from emulator import EmulatorConfig, ImsEmulator
from emulator.faults import Faults
from emulator.images import make_png
from testbed.processes import free_port, spawn_module
from testbed.redis_server import RedisServer
from tests.support.eventually import eventually, eventually_blocking
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.service_process import wait_serving

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "moderation-gateway.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
SCRAPE_INTERVAL = 1
# Grafana's variables as a query with "All" selected and a short range would expand them.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$backend": ".*"}
# Label lists and matchers, so that what is left of an expression names only metrics.
_NOT_METRIC_NAMES = re.compile(r"\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\bmoderation_[a-z_]+\b", _NOT_METRIC_NAMES.sub(" ", expression)))


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} ({target['refId']})", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
    ]


def named_metrics() -> set[str]:
    """Every metric the dashboard and the alert rules query."""
    expressions = [e for _, e in panel_queries()] + alert_expressions()
    return set().union(*map(metric_names, expressions))


def alert_expressions() -> list[str]:
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())
    return [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


@dataclass
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[Any]:
        result: list[Any] = self.get("/api/v1/query", query=expression)["result"]
        return result


@pytest.fixture
def prometheus(tmp_path: Path, replicas: list[Replica]) -> Iterator[Prometheus]:
    """Debian's prometheus on loopback, scraping the gateway every second and evaluating the alerts."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": f"{SCRAPE_INTERVAL}s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "moderation-gateway",
                        "static_configs": [{"targets": [r.metrics for r in replicas]}],
                    }
                ],
            }
        )
    )
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{address}/-/ready", timeout=1) as answer:
                    return bool(answer.status == 200)
            except OSError:
                assert process.poll() is None, f"prometheus did not start: {process.stderr}"
                return False

        eventually_blocking(ready, within=30, every=0.2)
        yield Prometheus(f"http://{address}")
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def faulty_emulator() -> Iterator[ImsEmulator]:
    """Some throttles (RequestLimitExceeded) and billed model failures, so retries and errors show."""
    faults = Faults(rate_limit_burst=0.1, model_call_failed=0.1, seed=17)
    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=0.05, faults=faults)
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


@dataclass
class Replica:
    port: int
    metrics: str


def start_replica(
    name: str, emulator: ImsEmulator, log_folder: Path, **settings: str
) -> tuple[subprocess.Popen[str], Replica]:
    """`python -m service` on the emulator with a budget and a bulkhead small enough for the load, and
    the verdict cache on (its panels need hits)."""
    replica = Replica(free_port(), f"127.0.0.1:{free_port()}")
    # Its log goes to a file: a pipe nobody reads would stall the gateway once full.
    with (log_folder / f"{name}.log").open("w") as log:
        settings = {
            "TENCENTCLOUD_SECRET_ID": SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
            "IMS_ENDPOINT": emulator.url,
            "MODERATION_METRICS_LISTEN": replica.metrics,
            "MODERATION_CACHE": "memory",
            "IMS_QPS": "20",
            "MODERATION_CALLER_MAX_IN_FLIGHT": "16",
            **settings,
        }
        process = spawn_module("service", replica.port, settings, log)
    return process, replica


@pytest.fixture
async def replicas(
    faulty_emulator: ImsEmulator, redis: RedisServer, tmp_path: Path
) -> AsyncIterator[list[Replica]]:
    """One replica in fleet mode on Redis, one with the in-process governor: every panel sees both."""
    started = [
        start_replica("fleet", faulty_emulator, tmp_path, MODERATION_REDIS_URL=redis.url),
        start_replica("solo", faulty_emulator, tmp_path),
    ]
    try:
        for _, replica in started:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
                await wait_serving(channel)
        yield [replica for _, replica in started]
    finally:
        for process, _ in started:
            process.terminate()
        for process, _ in started:
            process.wait(timeout=30)


async def load(replica: Replica, stop: asyncio.Event, concurrency: int = 32) -> int:
    """ModerateImage calls from `concurrency` callers until `stop` is set, more than the budget and the
    bulkhead take (so some wait, some are refused); returns how many were answered OK. One call in four
    sends the same image (cache hits, and coalesced calls while its first is in flight), the others
    images of many sizes (misses, billed)."""
    repeated = make_png(256, 256)
    calls = 0
    answered = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
        stub = moderation_service_pb2_grpc.ModerationServiceStub(channel)

        async def caller() -> None:
            nonlocal answered
            nonlocal calls
            while not stop.is_set():
                calls += 1
                image = repeated if calls % 4 == 0 else make_png(64 + calls % 1024, 64)
                try:
                    await stub.ModerateImage(ModerateImageRequest(content=image), timeout=1.0)
                    answered += 1
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return answered


def test_every_metric_named_is_the_gateways() -> None:
    assert all(name.startswith("moderation_") for name in named_metrics())


@pytest.mark.system
async def test_every_panel_returns_data_from_a_gateway_under_load(
    replicas: list[Replica], prometheus: Prometheus
) -> None:
    stop = asyncio.Event()
    loading = asyncio.gather(*(load(replica, stop) for replica in replicas))

    async def every_panel_has_data() -> set[str]:
        exported = set(await asyncio.to_thread(prometheus.get, "/api/v1/label/__name__/values"))
        missing = []
        for title, expression in panel_queries():
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            if not await asyncio.to_thread(prometheus.query, expression):
                missing.append(title)
        assert not missing, f"panels without data: {missing}"
        return exported

    try:
        # Until a few scrapes into the load every rate has two samples.
        exported = await eventually(every_panel_has_data, within=60, every=1.0)
    finally:
        stop.set()
    backends = await asyncio.to_thread(
        prometheus.get, "/api/v1/label/moderation_backend/values", **{"match[]": "moderation_circuit_state"}
    )
    rules = await asyncio.to_thread(prometheus.get, "/api/v1/rules")
    answered = await loading
    assert all(answered), answered
    assert named_metrics() <= exported
    assert backends == ["tencent"]
    health = {rule["name"]: rule["health"] for group in rules["groups"] for rule in group["rules"]}
    assert len(health) == len(alert_expressions())
    assert set(health.values()) == {"ok"}, health
