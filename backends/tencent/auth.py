"""TC3-HMAC-SHA256 request signing as an `httpx.Auth`, with credentials from a provider."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import httpx

from backends.tencent import signing
from backends.tencent.credentials import CredentialProvider, Credentials

__all__ = ["Credentials", "TC3Auth"]


class TC3Auth(httpx.Auth):
    """Signs each request over the exact bytes sent and the `Host` and `Content-Type` it carries.

    The credentials are read from the provider once per request, when it is signed: a rotation takes
    effect from the next request, and a request already signed finishes with the key it was signed with.
    """

    requires_request_body = True

    def __init__(
        self, credentials: CredentialProvider, *, service: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._credentials = credentials
        self._service = service
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        credentials = self._credentials.current()
        timestamp = int(self._clock())
        request.headers["X-TC-Timestamp"] = str(timestamp)
        request.headers["Authorization"] = signing.authorization(
            secret_id=credentials.secret_id,
            secret_key=credentials.secret_key,
            timestamp=timestamp,
            service=self._service,
            host=request.headers["Host"],
            content_type=request.headers["Content-Type"],
            body=request.content,
            path=request.url.raw_path.decode("ascii").split("?", 1)[0],
        )
        if credentials.token:
            # Temporary credentials: the token travels beside the signature, unsigned.
            request.headers["X-TC-Token"] = credentials.token
        yield request
