"""Callback requests through the gateway's SSRF guard (`backends.fetch`): the URL checked at submission
and before every attempt, the host's addresses checked as they are resolved and the connection pinned
to them, no redirect followed, 15 s per attempt."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import httpx

from backends.errors import BackendError
from backends.fetch import ForbiddenHost, IPNetwork, Lookup, checked_url, parsed_url, vetting_resolver

__all__ = ["ATTEMPT_TIMEOUT", "Answer", "CallbackEgress"]

# Standard Webhooks: a receiver answers quickly, and work it does later is its own.
ATTEMPT_TIMEOUT = 15.0
MAX_URL_CHARS = 2048


@dataclass(frozen=True)
class Answer:
    """One attempt's outcome: the HTTP status (0: none), the receiver's Retry-After, what went wrong."""

    status: int
    retry_after: float | None = None
    error: str = ""


class CallbackEgress:
    def __init__(
        self,
        *,
        allowed_networks: tuple[IPNetwork, ...],
        allow_http: bool,
        timeout: float = ATTEMPT_TIMEOUT,
        lookup: Lookup | None = None,
    ) -> None:
        self._allowed_networks = allowed_networks
        self._allow_http = allow_http
        self._timeout = timeout
        self._resolver = vetting_resolver(allowed_networks, lookup)
        self._session: aiohttp.ClientSession | None = None

    def problem(self, url: str) -> str | None:
        """Why the gateway will not call `url` back, or None when it may (its addresses are checked at
        each attempt)."""
        if len(url) > MAX_URL_CHARS:
            return f"at most {MAX_URL_CHARS} characters"
        try:
            parsed = checked_url(parsed_url(url), self._allowed_networks)
        except BackendError as refused:
            return refused.message.replace("the image URL", "the callback URL")
        if parsed.scheme != "https" and not self._allow_http:
            return "must be an https URL (plain http is not allowed on this gateway)"
        return None

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Answer:
        problem = self.problem(url)
        if problem is not None:
            return Answer(0, error=f"refused: {problem}")
        session = self._session_now()
        try:
            async with (
                asyncio.timeout(self._timeout),
                session.post(
                    url,
                    data=body,
                    headers={**headers, "content-type": "application/json"},
                    allow_redirects=False,
                ) as response,
            ):
                await response.read()
                return Answer(response.status, _retry_after(response.headers.get("retry-after")))
        except ForbiddenHost:
            return Answer(0, error="refused: the host resolves to an address that is not allowed")
        except TimeoutError:
            return Answer(0, error=f"no answer within {self._timeout:g} s")
        except (aiohttp.ClientError, OSError) as failure:
            return Answer(0, error=f"network error ({type(failure).__name__})")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=self._resolver, ssl=httpx.create_ssl_context(trust_env=False)
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
