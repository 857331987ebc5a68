"""Who is calling: bearer tokens from a file and/or client certificates (mutual TLS).

The caller's name goes into a context variable, which the access log, the spans and the metrics
read, and which the router uses for per-caller rate shares. The open services (health checks and
reflection, which load balancers and Kubernetes probe) need no credentials: the server names them.
Tokens are compared in constant time and never logged.

Token file: one caller a line, `name token`; blank lines and `#` comments are ignored.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from grpc_status import rpc_status

# Re-exported: the access log, spans, metrics and router read it from here.
from backends.calls import CALLER as CALLER
from common.files import MIB, UnreadableFile, read_text_file
from service import errors
from service.interceptors import AroundCalls, Behaviour, Context, Method

# Thousands of callers' lines; a larger file holds something else.
TOKEN_FILE_LIMIT = MIB


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


class CallerAuth(AroundCalls):
    """Runs a call only for an identified caller, with `CALLER` set; refuses it UNAUTHENTICATED otherwise.
    The calls of `open_services` pass unchecked."""

    def __init__(
        self, tokens: dict[str, str] | None, *, mutual_tls: bool, open_services: Iterable[str] = ()
    ) -> None:
        super().__init__(skip_services=open_services)
        # As bytes: `hmac.compare_digest` refuses a str with a non-ASCII character (TypeError), and
        # a caller chooses what its header holds.
        self._tokens = {known.encode(): name for known, name in (tokens or {}).items()}
        self._mutual_tls = mutual_tls

    def identify(self, context: Context) -> str | None:
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

    async def around(self, method: Method, behaviour: Behaviour, request: Any, context: Context) -> Any:
        caller = self.identify(context)
        if caller is None:
            rich = rpc_status.to_status(errors.unauthenticated_status())
            await context.abort(rich.code, rich.details, rich.trailing_metadata)
        CALLER.set(caller or "")
        return await behaviour(request, context)


def _bearer_token(presented: str | bytes) -> bytes | None:
    """The token of an `authorization: Bearer <token>` value, as bytes; None for any other value."""
    # surrogatepass: any str encodes, so no header a caller can send makes this raise.
    raw = presented if isinstance(presented, bytes) else presented.encode("utf-8", "surrogatepass")
    scheme, _, token = raw.partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None
