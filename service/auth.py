"""Who is calling: bearer tokens from a file and/or client certificates (mutual TLS).

The caller's name goes into a context variable, which the access log, the spans and the metrics
read, and which the router uses for per-caller rate shares. Health checks and reflection need no
credentials (load balancers and Kubernetes probe them). Tokens are compared in constant time and never
logged.

Token file: one caller a line, `name token`; blank lines and `#` comments are ignored.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status

# Re-exported: the access log, spans, metrics and router read it from here.
from backends.calls import CALLER as CALLER
from backends.files import MIB, UnreadableFile, read_text_file
from service import errors

# Thousands of callers' lines; a larger file holds something else.
TOKEN_FILE_LIMIT = MIB
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class TokenFileError(ValueError):
    pass


def load_tokens(path: Path) -> dict[str, str]:
    """token -> caller name."""
    tokens: dict[str, str] = {}
    try:
        lines = read_text_file(path, TOKEN_FILE_LIMIT).splitlines()
    except UnreadableFile as problem:
        raise TokenFileError(f"{path}: {problem}") from None
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 16:
            raise TokenFileError(
                f"{path}:{number}: expected `caller-name token` with a token of 16+ characters"
            )
        name, token = parts
        if token in tokens:
            raise TokenFileError(f"{path}:{number}: the same token is given to two callers")
        tokens[token] = name
    if not tokens:
        raise TokenFileError(f"{path}: no callers")
    return tokens


class CallerAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: dict[str, str] | None, *, mutual_tls: bool) -> None:
        # As bytes: `hmac.compare_digest` refuses a str with a non-ASCII character (TypeError), and
        # a caller chooses what its header holds.
        self._tokens = {known.encode(): name for known, name in (tokens or {}).items()}
        self._mutual_tls = mutual_tls

    def identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The caller's name, or None when the call must be refused."""
        if self._tokens:
            token = _bearer_token(dict(context.invocation_metadata() or ()).get("authorization", b""))
            if token is None:
                return None
            # Every configured token is compared, so timing tells nothing about which one nearly matched.
            matches = [name for known, name in self._tokens.items() if hmac.compare_digest(known, token)]
            return matches[0] if matches else None
        if self._mutual_tls:
            names = context.auth_context().get("x509_common_name") or context.auth_context().get(
                "x509_subject_alternative_name"
            )
            return names[0].decode() if names else "unknown-certificate"
        return ""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_SERVICES):
            return handler
        return _wrapped(handler, self)


def _bearer_token(presented: str | bytes) -> bytes | None:
    """The token of an `authorization: Bearer <token>` value, as bytes; None for any other value."""
    # surrogatepass: any str encodes, so no header a caller can send makes this raise.
    raw = presented if isinstance(presented, bytes) else presented.encode("utf-8", "surrogatepass")
    scheme, _, token = raw.partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


async def _refuse(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    rich = rpc_status.to_status(errors.unauthenticated_status())
    await context.abort(rich.code, rich.details, rich.trailing_metadata)


def _wrapped(handler: grpc.RpcMethodHandler, auth: CallerAuth) -> grpc.RpcMethodHandler:
    """The same handler, its behaviour run only for an identified caller, with CALLER set."""
    if handler.unary_unary:
        behaviour = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            caller = auth.identify(context)
            if caller is None:
                await _refuse(context)
            CALLER.set(caller or "")
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    streaming = handler.unary_stream or handler.stream_stream

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        caller = auth.identify(context)
        if caller is None:
            await _refuse(context)
        CALLER.set(caller or "")
        async for response in streaming(request, context):
            yield response

    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(
        stream,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
