"""A backend type added as one module and one registry line, nothing in `service/` changed: the gateway
paces, retries and meters it as the type declares (its own variables, its price).

The type here is a test's own ("scripted": it fails as told, else passes); the gateway around it is the
real one, built by `load_settings` and `build_server`, called over a real gRPC channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion
from moderation.v1.moderation_service_pb2_grpc import ModerationServiceStub
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from backends.base import Backend, Billing, Fingerprint
from backends.errors import BackendError, Kind
from backends.image_limits import ImageLimits
from backends.options import BackendOptions, attempts, rate_budget
from backends.plugin import BackendType, BuildContext
from backends.registry import BACKEND_TYPES
from emulator.images import make_png
from service.factory import build_backends
from service.server import Gateway, build_server
from service.settings import load_settings
from service.telemetry import setup_telemetry

PRICE_PER_10K = 40.0
IMAGE = make_png(64, 64)


class ScriptedOptions(BackendOptions):
    qps: int = rate_budget("SCRIPTED_QPS")
    max_attempts: int = attempts("SCRIPTED_MAX_ATTEMPTS")

    def billing(self) -> Billing:
        return Billing(PRICE_PER_10K)


class ScriptedBackend:
    """Fails with UNAVAILABLE (retried, billed) for the BizType `failing`, else passes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fingerprint = Fingerprint.of("scripted")
        self.concurrency = None
        self.image_limits = ImageLimits()
        self.calls = 0

    async def start(self) -> None:
        pass

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        self.calls += 1
        if request.biz_type == "failing":
            raise BackendError(Kind.UNAVAILABLE, "the model is down", upstream_code="model-down")
        return ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS, label="Normal", backend=self.name)

    async def aclose(self) -> None:
        pass


def build_scripted(name: str, options: ScriptedOptions, context: BuildContext) -> Backend:
    return ScriptedBackend(name)


SCRIPTED = BackendType(name="scripted", summary="a test's own", options=ScriptedOptions, build=build_scripted)


@pytest.fixture
async def gateway(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Gateway, InMemoryMetricReader]]:
    monkeypatch.setitem(BACKEND_TYPES, SCRIPTED.name, SCRIPTED)
    settings = load_settings(
        {
            "MODERATION_BACKEND": "scripted",
            "MODERATION_LISTEN": "127.0.0.1:0",
            "MODERATION_CACHE": "off",
            "SCRIPTED_QPS": "1000",
            "SCRIPTED_MAX_ATTEMPTS": "4",
        }
    )
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry({}, metric_readers=[reader])
    server = build_server(settings, build_backends(settings, telemetry), telemetry)
    await server.start()
    yield server, reader
    await server.stop()


def billed(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    totals = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name in {"moderation.billed_calls", "moderation.estimated_cost_cny"}:
                    totals[metric.name] = sum(getattr(p, "value", 0) for p in metric.data.data_points)
    return totals


async def test_a_new_type_is_retried_and_metered_as_it_declares(
    gateway: tuple[Gateway, InMemoryMetricReader],
) -> None:
    server, reader = gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = ModerationServiceStub(channel)
        answer = await stub.ModerateImage(ModerateImageRequest(content=IMAGE), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.ModerateImage(ModerateImageRequest(content=IMAGE, biz_type="failing"), timeout=10)
    assert answer.suggestion == Suggestion.SUGGESTION_PASS
    status = status_pb2.Status.FromString(
        dict(failed.value.trailing_metadata() or ())["grpc-status-details-bin"]
    )
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    # SCRIPTED_MAX_ATTEMPTS, not the default 3: one pass, then four attempts of the failing call.
    assert (info.metadata["attempts"], info.metadata["upstream_code"]) == ("4", "model-down")
    assert billed(reader) == {
        "moderation.billed_calls": 5,
        "moderation.estimated_cost_cny": pytest.approx(5 * PRICE_PER_10K / 10_000),
    }
