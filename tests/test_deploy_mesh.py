"""deploy/istio/, deploy/envoy/ and the client's gRPC service config: retries that bill nothing twice,
timeouts above the 15 s IMS service timeout, keepalive the server accepts; and the service config is
the one the client library's channels use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from moderation.v1 import moderation_service_pb2
from moderation.v1.moderation_service_pb2 import ModerateImageRequest
from moderation_client import ModerationClient, RetryPolicy
from moderation_client.base import CHANNEL_OPTIONS

from emulator.images import make_png
from service.deadlines import BACKEND_TIMEOUT
from service.server import SERVICE_NAME
from service.settings import Settings
from testbed.processes import free_port
from tests.support.gateway import GatewayFactory

ROOT = Path(__file__).resolve().parent.parent
# Failures before the gateway saw the call: nothing reached IMS, so a retry bills nothing.
UNBILLED_RETRY_ON = {"connect-failure", "refused-stream"}
# gRPC's server (C-core, which build_server leaves at its defaults) answers HTTP/2 PINGs sent more often
# than every 5 minutes with GOAWAY too_many_pings (grpc.http2.min_recv_ping_interval_without_data_ms).
SERVER_MIN_PING_INTERVAL = 300.0
MODERATE_IMAGE = f"/{SERVICE_NAME}/ModerateImage"
METHODS = moderation_service_pb2.DESCRIPTOR.services_by_name["ModerationService"].methods_by_name


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def istio(kind: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "istio" / f"{kind.lower()}.yaml").read_text()
    )
    assert document["kind"] == kind
    return document


def service_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(
        (ROOT / "client" / "moderation_client" / "service_config.json").read_text()
    )
    return config


def test_istio_retries_only_what_bills_nothing() -> None:
    routes = istio("VirtualService")["spec"]["http"]
    for route in routes:
        retries = route["retries"]
        if retries["attempts"]:
            assert set(retries["retryOn"].split(",")) <= UNBILLED_RETRY_ON, route["name"]
    text = (ROOT / "deploy" / "istio" / "virtualservice.yaml").read_text()
    for billed in ("unavailable", "resource-exhausted", "5xx", "cancelled", "deadline-exceeded"):
        assert f"retryOn: {billed}" not in text
        assert f",{billed}" not in text


def test_istio_timeouts_outlast_the_gateway_and_the_client() -> None:
    (unary,) = (r for r in istio("VirtualService")["spec"]["http"] if r["name"] == "moderate-image")
    assert unary["match"][0]["uri"]["exact"] == MODERATE_IMAGE
    assert seconds(unary["timeout"]) > method_timeout("ModerateImage") > BACKEND_TIMEOUT
    assert seconds(unary["retries"]["perTryTimeout"]) >= seconds(unary["timeout"])
    streams = next(r for r in istio("VirtualService")["spec"]["http"] if r["name"] == "streams")
    assert seconds(streams["timeout"]) == 0, "streams last as long as their items"


def test_istio_keepalive_and_stream_limits_match_the_server() -> None:
    pool = istio("DestinationRule")["spec"]["trafficPolicy"]["connectionPool"]
    assert seconds(pool["tcp"]["tcpKeepalive"]["time"]) >= SERVER_MIN_PING_INTERVAL
    assert pool["http"]["h2UpgradePolicy"] == "UPGRADE"


def envoy_routes() -> Iterator[dict[str, Any]]:
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    (listener,) = config["static_resources"]["listeners"]
    (manager,) = listener["filter_chains"][0]["filters"]
    for host in manager["typed_config"]["route_config"]["virtual_hosts"]:
        yield from host["routes"]


def envoy_cluster() -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    (cluster,) = config["static_resources"]["clusters"]
    return dict(cluster)


def test_envoy_retries_only_what_bills_nothing_and_outlasts_the_gateway() -> None:
    routes = list(envoy_routes())
    for route in routes:
        policy = route["route"].get("retry_policy")
        if policy:
            assert set(policy["retry_on"].split(",")) <= UNBILLED_RETRY_ON
    (unary,) = (r for r in routes if r["match"].get("path") == MODERATE_IMAGE)
    assert seconds(unary["route"]["timeout"]) > method_timeout("ModerateImage") > BACKEND_TIMEOUT


def test_envoy_keepalive_streams_and_health_match_the_server() -> None:
    cluster = envoy_cluster()
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    http2 = options["explicit_http_config"]["http2_protocol_options"]
    assert seconds(http2["connection_keepalive"]["interval"]) >= SERVER_MIN_PING_INTERVAL
    assert http2["max_concurrent_streams"] == Settings.model_fields["max_streams_per_connection"].default
    assert cluster["health_checks"][0]["grpc_health_check"]["service_name"] == SERVICE_NAME
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert (
        str(address["socket_address"]["port_value"])
        == Settings.model_fields["listen"].default.rsplit(":")[-1]
    )


def method_config(method: str) -> dict[str, Any]:
    (config,) = (
        c
        for c in service_config()["methodConfig"]
        if {"service": SERVICE_NAME, "method": method} in c["name"]
    )
    return dict(config)


def method_timeout(method: str) -> float:
    return seconds(method_config(method)["timeout"])


def test_service_config_covers_every_method_waits_for_ready_and_never_retries() -> None:
    for method in METHODS:
        assert method_config(method)["waitForReady"] is True, method
    text = json.dumps(service_config())
    assert "retryPolicy" not in text
    assert "hedgingPolicy" not in text
    assert "timeout" not in method_config("StreamModerateImages"), "a batch takes as long as its items"


def test_the_client_library_uses_the_shipped_service_config() -> None:
    (shipped,) = (value for key, value in CHANNEL_OPTIONS if key == "grpc.service_config")
    assert json.loads(str(shipped)) == service_config()


async def test_a_call_waits_for_a_server_that_is_starting(make_gateway: GatewayFactory) -> None:
    """waitForReady: without it the call (with no client retries) fails UNAVAILABLE at once."""
    port = free_port()
    async with ModerationClient(f"127.0.0.1:{port}", timeout=15, retry=RetryPolicy(max_retries=0)) as client:
        call = asyncio.ensure_future(client.moderate(ModerateImageRequest(content=make_png(64, 64))))
        await asyncio.sleep(1.0)
        assert not call.done()
        await make_gateway(listen=f"127.0.0.1:{port}")
        result = await call
    assert result.backend == "tencent"
