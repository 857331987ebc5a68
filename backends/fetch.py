"""Downloads the image behind a caller's URL, under IMS's rules, without opening the gateway's network.

IMS downloads `FileUrl` images itself: 3 s per attempt, one retry, sources under 30 MB. The embedded
backend does the same here, and so does the gateway for remote backends whose route fetches images
itself (`service.fitting`): one guard for both. Because the gateway sits inside a private network, a
caller-supplied URL must never reach it (SSRF). Every hop, redirects included, is checked twice:

* its URL, before the request: scheme, credentials, bare IP hosts in any spelling, metadata host names;
* every address its host name resolves to, inside the resolver the HTTP client connects with. The
  connection goes to exactly the addresses that were checked, so a DNS answer that changes between a
  check and the connect (rebinding) has no gap to slip through. aiohttp consults the resolver for every
  host except IP literals, and those the URL check has already judged.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import os
import socket
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

from backends.errors import BackendError, Kind
from backends.http import TRANSPORT_ERRORS
from common.hostnames import host_name_problem, parse_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A host name -> all of its A and AAAA addresses. Injectable so tests can make names resolve to
# private addresses without a DNS server.
Lookup = Callable[[str], Awaitable[Sequence[str]]]

SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Cloud instance-metadata services, refused by name as well as by address: an operator's allow-list
# may cover their link-local address, and a name may not resolve to the address expected of it.
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.tencentyun.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
HEADERS = {
    "User-Agent": "moderation-gateway",
    "Accept": "image/*,*/*;q=0.8",
    # Images are compressed already; an uncompressed transfer keeps the size limit about real bytes.
    "Accept-Encoding": "identity",
}
MIB = 1024 * 1024

# Not publicly routable, though `is_global` says otherwise on the Python versions we support.
_NOT_GLOBAL = (
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("fec0::/10"),  # deprecated site-local
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
)
# The well-known NAT64 prefix: the low 32 bits are the IPv4 host the translator connects to.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """How the gateway downloads a caller's image URL; the defaults are IMS's."""

    # Per download attempt, redirects and body included (IMS: 3 s).
    timeout: float = 3.0
    # IMS retries once.
    attempts: int = 2
    # IMS: the source image is under 30 MB.
    max_bytes: int = 30 * MIB
    max_redirects: int = 3
    # The operator's explicit exceptions to "public addresses only", e.g. an internal image store.
    allowed_networks: tuple[IPNetwork, ...] = ()


def parse_networks(value: object) -> object:
    """`MODERATION_FETCH_ALLOW_NETWORKS` as read from the environment: comma-separated networks."""
    if not isinstance(value, str):
        return value
    networks = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError("each entry must be a network such as 127.0.0.0/8 or ::1/128") from None
    return tuple(networks)


def is_forbidden(address: IPAddress, allowed_networks: Iterable[IPNetwork] = ()) -> bool:
    """Whether the gateway must not connect to `address`: not publicly routable and not allowed."""
    # ::ffff:a.b.c.d is the IPv4 host a.b.c.d itself, so it is judged, and allowed, as that host.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed_networks):
        return False
    return not _publicly_routable(address)


def _publicly_routable(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # 6to4 and NAT64 addresses lead to the IPv4 host embedded in them. (The NAT64 prefix lies in
        # ::/8, which `is_reserved` covers, so it is unwrapped before that test.)
        embedded = address.sixtofour
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
        if embedded is not None:
            return _publicly_routable(embedded)
    # `is_global` alone lets multicast (224/4, ff00::/8) and parts of the reserved space through.
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not any(address in network for network in _NOT_GLOBAL)
    )


def _looks_numeric(host: str) -> bool:
    """Whether a host that `ipaddress` does not read is still a number that some parser connects to.

    Browsers (the WHATWG URL standard) read a host whose last label is a decimal or 0x-hex number as
    IPv4, and libc's inet_aton takes the legacy forms: 2130706433, 0x7f.1, 017700000001, 127.1.
    """
    if ":" in host:  # an IPv6 literal `ipaddress` could not read
        return True
    last = host.rstrip(".").rpartition(".")[2].lower()
    if last.isdigit() or (last.startswith("0x") and all(c in string.hexdigits for c in last[2:])):
        return True
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True


def _shown(url: httpx.URL) -> str:
    """The URL as messages may show it: queries, fragments and user info can carry tokens."""
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


def _network_failure(exc: Exception) -> str:
    """Names a transport failure without quoting its message, which may hold the URL's query string."""
    # httpx-aiohttp maps aiohttp's errors coarsely (a refused connection becomes ConnectTimeout); the
    # aiohttp error it chains says what happened.
    cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
    reason = type(cause).__name__
    if isinstance(cause, OSError) and cause.errno is not None and cause.errno > 0:
        reason += f": {os.strerror(cause.errno)}"
    return f"network error ({reason})"


def _refused(message: str) -> BackendError:
    return BackendError(Kind.INVALID_REQUEST, message, field="url")


def _size(limit: int) -> str:
    return f"{limit / MIB:g} MB" if limit >= MIB else f"{limit} bytes"


async def _system_lookup(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _Forbidden(Exception):
    """A host name the resolver refuses.

    Not a BackendError: aiohttp may hand one lookup's exception to several concurrent requests, so
    `fetch` raises a BackendError of its own for each.
    """


class _VettingResolver(AbstractResolver):
    """The connector's resolver: hands out a name's addresses only if every one of them is allowed.

    Refusing the whole name when any address is forbidden keeps the outcome independent of which
    address the connector would have tried first.
    """

    def __init__(self, lookup: Lookup, allowed_networks: tuple[IPNetwork, ...]) -> None:
        self._lookup = lookup
        self._allowed_networks = allowed_networks

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        # `family` is not applied here: the connector drops the families it was not built for.
        addresses = list(dict.fromkeys(ipaddress.ip_address(a) for a in await self._lookup(host)))
        if not addresses:
            # An OSError is how aiohttp expects a failed lookup: it becomes a connection error.
            raise OSError(None, f"no addresses for {host}")
        if any(is_forbidden(address, self._allowed_networks) for address in addresses):
            raise _Forbidden(f"the host {host} resolves to an address that is not publicly routable")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        """Nothing to release: lookups hold no resources between calls."""


_INVALID_REDIRECT = "could not download the image: it redirects to an invalid URL"


class _AttemptFailed(Exception):
    """A failure another attempt may not repeat: an HTTP status other than 200."""


class ImageFetcher:
    """Downloads caller-supplied image URLs; one shared connection pool, safe for concurrent use."""

    def __init__(self, policy: FetchPolicy, *, resolver: Lookup | None = None) -> None:
        self._policy = policy
        vetting = _VettingResolver(resolver or _system_lookup, policy.allowed_networks)
        # certifi's CAs, as httpx gives the other backends, and nothing from the environment.
        ssl_context = httpx.create_ssl_context(trust_env=False)

        def session() -> aiohttp.ClientSession:
            # Built on first use, because aiohttp wants a running event loop.
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=vetting, ssl=ssl_context),
                # Cookies one site sets must never reach another hop or another caller's download.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )

        self._client = httpx.AsyncClient(
            transport=AiohttpTransport(client=session, trust_env=False),
            headers=HEADERS,
            # httpx keeps a cookie jar of its own; this one accepts no cookie from any domain.
            cookies=http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
            # Each hop is checked before it is requested, so redirects are followed here, by hand.
            follow_redirects=False,
            trust_env=False,
            # One deadline covers an attempt's connects, redirects and body (`asyncio.timeout` in
            # `fetch`); httpx's per-phase timeouts cannot express that.
            timeout=None,
        )

    async def fetch(self, url: str, *, timeout: float, headers: Mapping[str, str] | None = None) -> bytes:
        """The image's bytes; `timeout` is the caller's remaining budget, never exceeded. `headers` are
        added to every hop's request (an origin's anti-hotlinking rules may want a Referer)."""
        start = self._checked(self._parse(url))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        failure = "no time was left to download it"
        for _ in range(self._policy.attempts):
            budget = min(self._policy.timeout, deadline - loop.time())
            if budget <= 0:
                break
            # Refusals are BackendErrors and leave the loop at once: another attempt would be refused too.
            try:
                async with asyncio.timeout(budget):
                    return await self._attempt(start, headers or {})
            except _Forbidden as exc:
                raise _refused(str(exc)) from None
            except UnicodeError:
                # httpx builds `next_request` from any Location header, and idna refuses its host.
                raise BackendError(Kind.IMAGE_DOWNLOAD_FAILED, _INVALID_REDIRECT) from None
            except TimeoutError:
                failure = f"no complete answer within {budget:.3g} s"
            except _AttemptFailed as exc:
                failure = str(exc)
            except TRANSPORT_ERRORS as exc:
                failure = _network_failure(exc)
        raise BackendError(Kind.IMAGE_DOWNLOAD_FAILED, f"could not download {_shown(start)}: {failure}")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _attempt(self, start: httpx.URL, headers: Mapping[str, str]) -> bytes:
        url = start
        seen = {start}
        for _ in range(self._policy.max_redirects + 1):
            async with self._client.stream("GET", url, headers=headers) as response:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    url = self._checked(self._parse(location, base=url))
                    if url in seen:
                        raise BackendError(
                            Kind.IMAGE_DOWNLOAD_FAILED,
                            f"could not download {_shown(start)}: its redirects loop back to a URL "
                            "they already visited; give the image's final URL",
                        )
                    seen.add(url)
                    continue
                if response.status_code != 200:
                    raise _AttemptFailed(f"HTTP {response.status_code}")
                return await self._read(response, url)
        raise BackendError(
            Kind.IMAGE_DOWNLOAD_FAILED,
            f"could not download {_shown(start)}: more than {self._policy.max_redirects} redirects",
        )

    async def _read(self, response: httpx.Response, url: httpx.URL) -> bytes:
        limit = self._policy.max_bytes
        too_large = f"the image at {_shown(url)} is larger than {_size(limit)}"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _refused(too_large)
        # Counted as it arrives: a missing or lying Content-Length must not let a body exhaust memory.
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _refused(too_large)
        if not body:
            raise _refused(f"the image at {_shown(url)} is empty")
        return bytes(body)

    @staticmethod
    def _parse(raw: str, *, base: httpx.URL | None = None) -> httpx.URL:
        try:
            url = parse_url(raw, base=base)
            problem = host_name_problem(url.host) if url.host else None
        except httpx.InvalidURL:
            problem = "it cannot be parsed"
        if problem is None:
            return url
        # Not quoted: the text may carry a token. A bad redirect is the image server's fault, not the URL's.
        if base is not None:
            raise BackendError(Kind.IMAGE_DOWNLOAD_FAILED, _INVALID_REDIRECT)
        raise _refused(f"the image URL is not a valid URL: {problem}")

    def _checked(self, url: httpx.URL) -> httpx.URL:
        return checked_url(url, self._policy.allowed_networks)


def checked_url(url: httpx.URL, allowed_networks: tuple[IPNetwork, ...]) -> httpx.URL:
    """`url` if the gateway may request it; the addresses its host resolves to are checked later, by
    `vetting_resolver`. Refusals are BackendErrors of kind INVALID_REQUEST."""
    if url.scheme not in SCHEMES:
        raise _refused(f"URL scheme {url.scheme!r} is not allowed: only http and https")
    shown = _shown(url)
    if url.userinfo:
        raise _refused(f"{shown}: URLs with credentials are not allowed")
    host = url.host
    if not host:
        raise _refused(f"{shown}: the URL has no host")
    try:
        address: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None or _looks_numeric(host):
        # Non-canonical spellings are refused even inside the allow-list: parsers disagree on them.
        if address is None or is_forbidden(address, allowed_networks):
            raise _refused(f"{shown}: bare IP hosts are not allowed")
    elif host.rstrip(".") in METADATA_HOSTS:
        raise _refused(f"{shown}: cloud metadata hosts are not allowed")
    return url


def parsed_url(raw: str) -> httpx.URL:
    """A caller's URL parsed as the guard reads it; a BackendError (INVALID_REQUEST) if it cannot be."""
    return ImageFetcher._parse(raw)


def vetting_resolver(
    allowed_networks: tuple[IPNetwork, ...], lookup: Lookup | None = None
) -> AbstractResolver:
    """An aiohttp resolver that connects only to allowed addresses, each checked as it is resolved (the
    connection is pinned to it). A refused host raises `ForbiddenHost`."""
    return _VettingResolver(lookup or _system_lookup, allowed_networks)


ForbiddenHost = _Forbidden
