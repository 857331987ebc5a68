"""The gRPC server, built by one function that production and tests share.

Shutdown sequence: health flips to NOT_SERVING (load balancers stop sending), an optional drain delay,
`server.stop(grace)` (no new calls; in-flight calls get up to `grace` seconds), then backends close.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from moderation.v1 import moderation_service_pb2, moderation_service_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from backends.base import Backend
from service.config import Settings
from service.governor import RateGovernor
from service.retry import RetryPolicy
from service.servicer import ModerationServicer
from service.streaming import Window
from service.telemetry import Telemetry
from service.validation import MAX_IMAGE_BYTES

log = logging.getLogger(__name__)

SERVICE_NAME = moderation_service_pb2.DESCRIPTOR.services_by_name["ModerationService"].full_name
# The largest image IMS accepts, plus room for the other fields and for sizes just over the limit,
# which then get a clear INVALID_ARGUMENT instead of a bare RESOURCE_EXHAUSTED.
MAX_RECEIVE_MESSAGE_BYTES = MAX_IMAGE_BYTES + 4 * 1024 * 1024


class PortInUseError(RuntimeError):
    pass


@dataclass
class Gateway:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    servicer: ModerationServicer
    backend: Backend
    settings: Settings
    telemetry: Telemetry

    async def start(self) -> None:
        """Serve at once (health answers NOT_SERVING), and report SERVING once the backend is ready."""
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        await self.backend.start()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """The graceful shutdown sequence; in-flight calls finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        if self.settings.drain_delay:
            await asyncio.sleep(self.settings.drain_delay)
        await self.server.stop(self.settings.shutdown_grace)
        await self.servicer.aclose()
        await self.backend.aclose()
        self.telemetry.shutdown()


# Health checks and reflection are the mesh's plumbing, not traffic worth a span.
_TRACED_CALLS = filters.negate(
    filters.any_of(filters.service_name(health.SERVICE_NAME), filters.service_prefix("grpc.reflection"))
)


def build_server(settings: Settings, backend: Backend, telemetry: Telemetry | None = None) -> Gateway:
    """The server bound to `settings.listen` (port 0 picks a free one), not yet started."""
    telemetry = telemetry or Telemetry.off()
    interceptors = []
    if telemetry.tracing:
        # The server span per RPC, continuing the caller's W3C traceparent and baggage.
        interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=telemetry.tracer_provider, filter_=_TRACED_CALLS
        )
        interceptors.append(interceptor)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            # Otherwise a second server silently shares the port with a leftover one.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
        ],
    )
    governor = RateGovernor(
        settings.qps, interactive_share=settings.interactive_share, metrics=telemetry.metrics
    )
    telemetry.metrics.watch_rate(backend.name, governor)
    servicer = ModerationServicer(
        backend,
        RetryPolicy(max_attempts=settings.max_attempts),
        backend_timeout=settings.backend_timeout,
        governor=governor,
        stream_window=Window(settings.stream_max_in_flight, settings.stream_max_in_flight_bytes),
        max_in_flight=settings.max_in_flight,
        telemetry=telemetry,
    )
    moderation_service_pb2_grpc.add_ModerationServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(settings.listen)
    except RuntimeError as exc:
        raise PortInUseError(f"cannot listen on {settings.listen}: {exc}") from None
    if port == 0:
        raise PortInUseError(f"cannot listen on {settings.listen}: the address is in use or invalid")
    return Gateway(server, port, health_servicer, servicer, backend, settings, telemetry)
