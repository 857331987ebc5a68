"""What both client forms share: `ClientBase` (the options, the channel it opens, each call's time
budget) and the constants around it."""

from __future__ import annotations

from importlib import resources
from types import ModuleType

import grpc
from moderation.v1.moderation_service_pb2_grpc import ModerationServiceStub

from moderation_client.health import CHECK_METHOD, HealthCheckRequest, HealthCheckResponse
from moderation_client.retry import CallBudget, RetryPolicy

DEFAULT_TIMEOUT = 30.0  # the gateway spends at most IMS's 15 s; the rest is for its rate budget
# A health check answers at once when the server is up; a probe should know quickly when it is not.
HEALTH_TIMEOUT = 5.0
# Above anything the gateway accepts (IMS's 7.45 MiB images, ~11.5 MiB messages), so a too-large
# image gets the gateway's clear error rather than one made by this client's gRPC.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# The gRPC service config every channel uses (shipped for other languages' clients too): calls wait for
# a connection instead of failing at once, per-method deadlines, and no retryPolicy, since a retried call
# that reached IMS is billed again; the client's own retries (moderation_client.retry) know which were.
SERVICE_CONFIG = (resources.files("moderation_client") / "service_config.json").read_text(encoding="utf-8")
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.service_config", SERVICE_CONFIG),
)


class ClientBase:
    """Options of a client, and its channel opened by `_grpc` (`grpc` or `grpc.aio`).

    `target` is a gRPC target (`host:port`, `dns:///host:port`, ...). `credentials` (from
    `grpc.ssl_channel_credentials`) switches to TLS; `token` is sent as `authorization: Bearer`.
    `timeout` is each unary call's deadline, retries included, and `stream_timeout` each stream
    helper call's (None: no deadline); `attempt_timeout` optionally caps each attempt of a unary call.
    """

    _grpc: ModuleType

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        attempt_timeout: float | None = None,
        stream_timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.target = target
        self._timeout = timeout
        self._attempt_timeout = attempt_timeout
        self._stream_timeout = stream_timeout
        self._retry = retry or RetryPolicy()
        # Metadata rather than call credentials, which gRPC refuses on plain-text channels (a mesh
        # whose sidecar terminates TLS). Never part of a repr.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if credentials is None:
            self._channel = self._grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            self._channel = self._grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        # The generated stub serves both APIs: its methods are blocking or awaitable as the channel is.
        self._stub = ModerationServiceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            CHECK_METHOD,
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r})"

    def _call_budget(self, timeout: float | None) -> CallBudget:
        return CallBudget(self._retry, self._timeout if timeout is None else timeout, self._attempt_timeout)

    def _stream_budget(self, timeout: float | None) -> CallBudget:
        return CallBudget(self._retry, self._stream_timeout if timeout is None else timeout, None)
