"""How an IMS request authenticates: headers computed from the exact bytes sent.

TC3-HMAC-SHA256 signs the body, the request path and the `Host` and `Content-Type` headers, with
credentials from a provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from backends.tencent import signing
from backends.tencent.credentials import CredentialProvider, Credentials

__all__ = ["Credentials", "Outgoing", "RequestAuth", "TC3Auth"]


@dataclass(frozen=True)
class Outgoing:
    """What authentication may cover: the request as it goes on the wire."""

    host: str  # the `Host` header sent
    path: str  # the request path sent (percent-encoded), without a query
    content_type: str
    # The bytes sent, or their parts in order (`backends.http.Body`).
    body: bytes | Iterable[bytes]


class RequestAuth(Protocol):
    # Whether the headers hash the body: then a large body is signed off the event loop.
    @property
    def reads_body(self) -> bool: ...

    def headers(self, request: Outgoing) -> dict[str, str]:
        """The headers that authenticate `request`."""
        ...


class TC3Auth:
    """Signs each request over the exact bytes sent and the `Host` and `Content-Type` it carries.

    The credentials are read from the provider once per request, when it is signed: a rotation takes
    effect from the next request, and a request already signed finishes with the key it was signed with.
    """

    reads_body = True

    def __init__(
        self, credentials: CredentialProvider, *, service: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._credentials = credentials
        self._service = service
        self._clock = clock

    def headers(self, request: Outgoing) -> dict[str, str]:
        credentials = self._credentials.current()
        timestamp = int(self._clock())
        headers = {
            "X-TC-Timestamp": str(timestamp),
            "Authorization": signing.authorization(
                secret_id=credentials.secret_id,
                secret_key=credentials.secret_key,
                timestamp=timestamp,
                service=self._service,
                host=request.host,
                content_type=request.content_type,
                body=request.body,
                path=request.path,
            ),
        }
        if credentials.token:
            # Temporary credentials: the token travels beside the signature, unsigned.
            headers["X-TC-Token"] = credentials.token
        return headers
