"""TC3-HMAC-SHA256 request signing as an `httpx.Auth`."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import httpx

from backends.tencent import signing


@dataclass(frozen=True)
class Credentials:
    """A Tencent Cloud API key pair, with the session token of temporary credentials.

    The secret fields are excluded from repr so a credential never reaches a log line or a traceback.
    """

    secret_id: str
    secret_key: str = field(repr=False)
    token: str = field(default="", repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be shown: an endpoint that echoes the request would show the key id too."""
        return (self.secret_id, self.secret_key, self.token)


class TC3Auth(httpx.Auth):
    """Signs each request over the exact bytes sent and the `Host` and `Content-Type` it carries."""

    requires_request_body = True

    def __init__(
        self, credentials: Credentials, *, service: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._credentials = credentials
        self._service = service
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = int(self._clock())
        request.headers["X-TC-Timestamp"] = str(timestamp)
        request.headers["Authorization"] = signing.authorization(
            secret_id=self._credentials.secret_id,
            secret_key=self._credentials.secret_key,
            timestamp=timestamp,
            service=self._service,
            host=request.headers["Host"],
            content_type=request.headers["Content-Type"],
            body=request.content,
            path=request.url.raw_path.decode("ascii").split("?", 1)[0],
        )
        if self._credentials.token:
            # Temporary credentials: the token travels beside the signature, unsigned.
            request.headers["X-TC-Token"] = self._credentials.token
        yield request
