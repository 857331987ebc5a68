"""`ImageFetcher` over real loopback sockets: IMS's download rules, and the refusals that keep a caller's
URL out of the gateway's own network.

Every address here is loopback. Names that "resolve" elsewhere come from an injected lookup, and a
refused address is never connected to: the tests that could tell (tripwire listeners) check it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from backends.errors import BackendError, Kind
from backends.fetch import FetchPolicy, ImageFetcher, IPNetwork, is_forbidden

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16
MAX_BYTES = 64 * 1024
ATTEMPT_TIMEOUT = 0.3
LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
LOOPBACK_V6 = ipaddress.ip_network("::1/128")
ONLY_127_0_0_1 = ipaddress.ip_network("127.0.0.1/32")
BARE_IP = "bare IP hosts are not allowed"
NOT_PUBLIC = "not publicly routable"


@dataclass
class ImageServer:
    """An HTTP server on a loopback address that records what reached it."""

    host: str
    port: int = 0
    requests: list[tuple[str, CIMultiDictProxy[str]]] = field(default_factory=list)
    # Set at teardown so slow handlers finish and the server can stop at once.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def hits(self, path: str) -> int:
        return sum(1 for seen, _ in self.requests if seen == path)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ImageServer]:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/image", self._image)
        app.router.add_get("/go", self._go)
        app.router.add_get("/chain/{left}", self._chain)
        app.router.add_get("/flaky", self._flaky)
        app.router.add_get("/missing", self._missing)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/large", self._large)
        app.router.add_get("/large-stream", self._large_stream)
        app.router.add_get("/declared-31mb", self._declared_31mb)
        app.router.add_get("/empty", self._empty)
        app.router.add_get("/set-cookie", self._set_cookie)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield self
        finally:
            self.release.set()
            await runner.cleanup()

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.path, request.headers))
        return await handler(request)

    async def _image(self, request: web.Request) -> web.Response:
        return web.Response(body=IMAGE, content_type="image/png")

    async def _go(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _chain(self, request: web.Request) -> web.Response:
        left = int(request.match_info["left"])
        raise web.HTTPFound(f"/chain/{left - 1}" if left else "/image")

    async def _flaky(self, request: web.Request) -> web.Response:
        if self.hits("/flaky") == 1:
            raise web.HTTPNotFound()
        return web.Response(body=IMAGE)

    async def _missing(self, request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="secret page body")

    async def _slow(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(body=IMAGE)

    async def _large(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (MAX_BYTES + 1))

    async def _large_stream(self, request: web.Request) -> web.StreamResponse:
        # Chunked, with no Content-Length: only counting the bytes as they arrive catches it.
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(MAX_BYTES // 1024 + 2):
                await response.write(b"x" * 1024)
        return response

    async def _declared_31mb(self, request: web.Request) -> web.StreamResponse:
        # Announces 31 MB and sends a little: the fetcher must refuse on the header alone.
        response = web.StreamResponse()
        response.content_length = 31 * 1024 * 1024
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(b"x" * 1024)
        return response

    async def _empty(self, request: web.Request) -> web.Response:
        return web.Response(body=b"")

    async def _set_cookie(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/image", headers={"Set-Cookie": "session=cookie-secret; Path=/"})


@dataclass
class Tripwire:
    """A listener that only counts connections: proof that a refused address was never connected to."""

    host: str
    port: int = 0
    connections: int = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Tripwire]:
        async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        server = await asyncio.start_server(count, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


class FakeDns:
    """An injected lookup: fixed answers, and a record of the names asked for."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if host not in self.records:
            raise socket.gaierror(socket.EAI_NONAME, "unknown name")
        return self.records[host]


FetcherFactory = Callable[..., ImageFetcher]


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    async with ImageServer("127.0.0.1").running() as running:
        yield running


@pytest.fixture
async def server6() -> AsyncIterator[ImageServer]:
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")
    async with ImageServer("::1").running() as running:
        yield running


@pytest.fixture
async def tripwire() -> AsyncIterator[Tripwire]:
    async with Tripwire("127.0.0.1").running() as running:
        yield running


@pytest.fixture
async def make_fetcher() -> AsyncIterator[FetcherFactory]:
    """Builds fetchers with test-sized limits; closes them all at teardown."""
    made: list[ImageFetcher] = []

    def make(
        *allowed: IPNetwork,
        resolver: FakeDns | None = None,
        timeout: float = ATTEMPT_TIMEOUT,
        max_bytes: int = MAX_BYTES,
        max_redirects: int = 3,
    ) -> ImageFetcher:
        policy = FetchPolicy(
            timeout=timeout, max_bytes=max_bytes, max_redirects=max_redirects, allowed_networks=allowed
        )
        fetcher = ImageFetcher(policy, resolver=resolver)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.aclose()


async def refusal(fetcher: ImageFetcher, url: str, *, timeout: float = 2.0) -> BackendError:
    """The INVALID_REQUEST the fetcher must answer `url` with."""
    with pytest.raises(BackendError) as caught:
        await fetcher.fetch(url, timeout=timeout)
    assert caught.value.kind is Kind.INVALID_REQUEST, caught.value
    assert caught.value.field == "url"
    return caught.value


async def download_failure(fetcher: ImageFetcher, url: str, *, timeout: float = 2.0) -> BackendError:
    with pytest.raises(BackendError) as caught:
        await fetcher.fetch(url, timeout=timeout)
    assert caught.value.kind is Kind.IMAGE_DOWNLOAD_FAILED, caught.value
    return caught.value


# --- what downloads --------------------------------------------------------------------------------


async def test_downloads_from_an_allowed_loopback_address(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    assert await make_fetcher(LOOPBACK_V4).fetch(server.url + "/image", timeout=2) == IMAGE
    [(_, headers)] = server.requests
    assert headers["User-Agent"] == "moderation-gateway"
    assert "Authorization" not in headers
    assert "Cookie" not in headers


async def test_follows_redirects_up_to_the_limit(make_fetcher: FetcherFactory, server: ImageServer) -> None:
    fetcher = make_fetcher(LOOPBACK_V4, max_redirects=3)
    assert await fetcher.fetch(server.url + "/chain/2", timeout=2) == IMAGE
    assert server.hits("/image") == 1


async def test_a_name_resolving_to_an_allowed_address_downloads(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    fetcher = make_fetcher(ONLY_127_0_0_1, resolver=dns)
    assert await fetcher.fetch(f"http://images.test:{server.port}/image", timeout=2) == IMAGE
    assert dns.asked == ["images.test"]


async def test_the_system_resolver_is_vetted_too(make_fetcher: FetcherFactory, server: ImageServer) -> None:
    error = await refusal(make_fetcher(), f"http://localhost:{server.port}/image")
    assert NOT_PUBLIC in error.message
    assert (
        await make_fetcher(LOOPBACK_V4, LOOPBACK_V6).fetch(f"http://localhost:{server.port}/image", timeout=2)
        == IMAGE
    )
    assert server.hits("/image") == 1


async def test_an_ipv6_literal_inside_the_allow_list_downloads(
    make_fetcher: FetcherFactory, server6: ImageServer
) -> None:
    assert await make_fetcher(LOOPBACK_V6).fetch(server6.url + "/image", timeout=2) == IMAGE


# --- bare IP hosts ---------------------------------------------------------------------------------


async def test_loopback_is_refused_without_an_allow_list(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    error = await refusal(make_fetcher(), server.url + "/image")
    assert BARE_IP in error.message
    assert server.requests == []


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # 127.0.0.1 as one decimal number
        "017700000001",  # ... as one octal number
        "0x7f000001",  # ... as one hex number
        "0x7f.1",
        "127.1",
        "0177.0.1",
        "127.0.0.1.",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "0",
        "0.0.0.0",
        "[::]",
        "10.0.0.5",
        "169.254.169.254",
        "100.64.0.1",
        "[fe80::1]",
        "[fc00::1]",
    ],
)
async def test_bare_ip_hosts_are_refused_in_every_spelling(
    make_fetcher: FetcherFactory, tripwire: Tripwire, host: str
) -> None:
    error = await refusal(make_fetcher(), f"http://{host}:{tripwire.port}/image")
    assert BARE_IP in error.message
    assert tripwire.connections == 0


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "127.0.0.1."])
async def test_non_canonical_spellings_are_refused_even_inside_the_allow_list(
    make_fetcher: FetcherFactory, server: ImageServer, host: str
) -> None:
    # Parsers disagree on these forms, so the address checked might not be the one connected to.
    error = await refusal(make_fetcher(LOOPBACK_V4), f"http://{host}:{server.port}/image")
    assert BARE_IP in error.message
    assert server.requests == []


async def test_a_dotted_octal_host_is_not_a_valid_url(make_fetcher: FetcherFactory) -> None:
    # httpx rejects 0177.0.0.1 as a malformed IPv4 address before any check runs.
    error = await refusal(make_fetcher(), "http://0177.0.0.1/image")
    assert "not a valid URL" in error.message


# --- names -----------------------------------------------------------------------------------------


async def test_a_name_resolving_to_a_private_address_is_refused(make_fetcher: FetcherFactory) -> None:
    dns = FakeDns({"evil.example": ["10.0.0.5"]})
    started = time.monotonic()
    # Refused by the resolver, so no connection to 10.0.0.5 is attempted (one would fail as a download
    # error after the timeout, not as an immediate INVALID_REQUEST).
    error = await refusal(make_fetcher(resolver=dns), "http://evil.example/image")
    assert NOT_PUBLIC in error.message
    assert dns.asked == ["evil.example"]
    assert time.monotonic() - started < ATTEMPT_TIMEOUT


async def test_a_name_is_refused_before_connecting(make_fetcher: FetcherFactory, tripwire: Tripwire) -> None:
    dns = FakeDns({"evil.example": ["127.0.0.1"]})
    error = await refusal(make_fetcher(resolver=dns), f"http://evil.example:{tripwire.port}/")
    assert NOT_PUBLIC in error.message
    assert tripwire.connections == 0


async def test_one_forbidden_address_among_allowed_ones_refuses_the_name(
    make_fetcher: FetcherFactory, tripwire: Tripwire
) -> None:
    # 127.0.0.1 is allowed here, standing in for a public address; 10.0.0.5 is not.
    dns = FakeDns({"mixed.example": ["127.0.0.1", "10.0.0.5"]})
    error = await refusal(
        make_fetcher(ONLY_127_0_0_1, resolver=dns), f"http://mixed.example:{tripwire.port}/"
    )
    assert NOT_PUBLIC in error.message
    assert tripwire.connections == 0


@pytest.mark.parametrize(
    "host", ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata.tencentyun.com"]
)
async def test_metadata_hosts_are_refused_by_name(
    make_fetcher: FetcherFactory, tripwire: Tripwire, host: str
) -> None:
    # Even where the name would resolve to an allowed address: it is never looked up.
    dns = FakeDns({host.lower().rstrip("."): ["127.0.0.1"]})
    error = await refusal(
        make_fetcher(LOOPBACK_V4, resolver=dns), f"http://{host}:{tripwire.port}/computeMetadata/v1/"
    )
    assert "metadata" in error.message
    assert dns.asked == []
    assert tripwire.connections == 0


# --- redirects -------------------------------------------------------------------------------------


async def test_too_many_redirects_fail_without_a_retry(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    error = await download_failure(make_fetcher(LOOPBACK_V4, max_redirects=3), server.url + "/chain/3")
    assert "more than 3 redirects" in error.message
    assert len(server.requests) == 4


async def test_a_redirect_to_the_metadata_address_is_refused(
    make_fetcher: FetcherFactory, server: ImageServer, tripwire: Tripwire
) -> None:
    # An unused port, so that even a broken fetcher could not reach a real metadata service.
    url = f"{server.url}/go?to=http://169.254.169.254:{tripwire.port}/latest/meta-data/"
    error = await refusal(make_fetcher(LOOPBACK_V4), url)
    assert BARE_IP in error.message
    assert "169.254.169.254" in error.message


async def test_a_redirect_to_loopback_is_refused_when_only_the_first_hop_is_allowed(
    make_fetcher: FetcherFactory, server: ImageServer, server6: ImageServer
) -> None:
    url = f"{server.url}/go?to={server6.url}/image"
    error = await refusal(make_fetcher(ONLY_127_0_0_1), url)
    assert BARE_IP in error.message
    assert server6.requests == []
    # The same redirect is followed once ::1 is allowed too: the refusal was about the address.
    assert await make_fetcher(ONLY_127_0_0_1, LOOPBACK_V6).fetch(url, timeout=2) == IMAGE


async def test_a_redirect_to_a_name_resolving_to_a_forbidden_address_is_refused(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"], "internal.test": ["127.0.0.2"]})
    async with Tripwire("127.0.0.2").running() as internal:
        url = f"http://images.test:{server.port}/go?to=http://internal.test:{internal.port}/"
        error = await refusal(make_fetcher(ONLY_127_0_0_1, resolver=dns), url)
        assert internal.connections == 0
    assert NOT_PUBLIC in error.message
    assert dns.asked == ["images.test", "internal.test"]


@pytest.mark.parametrize("host", ["xn--a", "a..b", "a" * 64 + ".example"])
async def test_a_redirect_to_a_host_idna_rejects_is_a_download_failure(
    make_fetcher: FetcherFactory, server: ImageServer, host: str
) -> None:
    error = await download_failure(make_fetcher(LOOPBACK_V4), f"{server.url}/go?to=http://{host}/i.png")
    assert "redirects to an invalid URL" in error.message
    assert host not in error.message


@pytest.mark.parametrize(
    "target", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://localhost:70/"]
)
async def test_a_redirect_to_another_scheme_is_refused(
    make_fetcher: FetcherFactory, server: ImageServer, target: str
) -> None:
    error = await refusal(make_fetcher(LOOPBACK_V4), f"{server.url}/go?to={target}")
    assert "only http and https" in error.message


# --- schemes and credentials -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://localhost:70/_",
        "data:image/png;base64,AA==",
    ],
)
async def test_schemes_other_than_http_are_refused(make_fetcher: FetcherFactory, url: str) -> None:
    error = await refusal(make_fetcher(LOOPBACK_V4), url)
    assert "only http and https" in error.message


async def test_urls_with_credentials_are_refused(make_fetcher: FetcherFactory, server: ImageServer) -> None:
    error = await refusal(make_fetcher(LOOPBACK_V4), f"http://user:pass-secret@127.0.0.1:{server.port}/image")
    assert "credentials" in error.message
    assert "pass-secret" not in error.message
    assert server.requests == []


async def test_cookies_are_never_sent(make_fetcher: FetcherFactory, server: ImageServer) -> None:
    # By name: aiohttp's own cookie jar would ignore cookies from a bare IP host anyway.
    fetcher = make_fetcher(LOOPBACK_V4, resolver=FakeDns({"images.test": ["127.0.0.1"]}))
    for _ in range(2):
        assert await fetcher.fetch(f"http://images.test:{server.port}/set-cookie", timeout=2) == IMAGE
    assert len(server.requests) == 4
    assert all("Cookie" not in headers for _, headers in server.requests)


# --- retries and timeouts --------------------------------------------------------------------------


async def test_a_failed_status_is_retried_once(make_fetcher: FetcherFactory, server: ImageServer) -> None:
    assert await make_fetcher(LOOPBACK_V4).fetch(server.url + "/flaky", timeout=2) == IMAGE
    assert server.hits("/flaky") == 2


async def test_a_persistent_failure_is_a_download_failure(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    error = await download_failure(make_fetcher(LOOPBACK_V4), server.url + "/missing")
    assert "HTTP 404" in error.message
    assert "secret page body" not in error.message
    assert server.hits("/missing") == 2


async def test_a_slow_server_times_out_and_is_retried_once(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    started = time.monotonic()
    error = await download_failure(make_fetcher(LOOPBACK_V4), server.url + "/slow")
    elapsed = time.monotonic() - started
    assert 2 * ATTEMPT_TIMEOUT <= elapsed < 2 * ATTEMPT_TIMEOUT + 0.4
    assert f"within {ATTEMPT_TIMEOUT:g} s" in error.message
    assert server.hits("/slow") == 2


async def test_the_callers_budget_is_never_exceeded(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    started = time.monotonic()
    await download_failure(make_fetcher(LOOPBACK_V4, timeout=1.0), server.url + "/slow", timeout=0.2)
    # Well under the 1 s a policy-bound attempt would take.
    assert time.monotonic() - started < 0.2 + 0.3
    assert server.hits("/slow") == 1


async def test_a_refused_connection_is_a_download_failure(make_fetcher: FetcherFactory) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    error = await download_failure(make_fetcher(LOOPBACK_V4), f"http://127.0.0.1:{port}/image")
    assert "Connection refused" in error.message


# --- size ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/large", "/large-stream"])
async def test_a_body_over_the_limit_is_refused_without_a_retry(
    make_fetcher: FetcherFactory, server: ImageServer, path: str
) -> None:
    error = await refusal(make_fetcher(LOOPBACK_V4), server.url + path)
    assert f"larger than {MAX_BYTES} bytes" in error.message
    assert server.hits(path) == 1


async def test_the_default_limit_is_30_mb_and_content_length_is_checked_first(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    fetcher = make_fetcher(LOOPBACK_V4, max_bytes=FetchPolicy().max_bytes)
    error = await refusal(fetcher, server.url + "/declared-31mb")
    assert "larger than 30 MB" in error.message


async def test_an_empty_body_is_refused(make_fetcher: FetcherFactory, server: ImageServer) -> None:
    error = await refusal(make_fetcher(LOOPBACK_V4), server.url + "/empty")
    assert "empty" in error.message


# --- messages --------------------------------------------------------------------------------------


async def test_error_messages_never_show_query_strings(
    make_fetcher: FetcherFactory, server: ImageServer
) -> None:
    allowed = make_fetcher(ONLY_127_0_0_1)
    redirect = f"{server.url}/go?to=http://127.0.0.2:{server.port}/x%3Ftoken%3Dquery-secret"
    errors = [
        await refusal(make_fetcher(), server.url + "/image?token=query-secret#frag"),
        await download_failure(allowed, server.url + "/missing?token=query-secret"),
        await refusal(allowed, redirect),
        await refusal(allowed, server.url + "/large?token=query-secret"),
    ]
    for error in errors:
        assert "query-secret" not in error.message
        assert "?" not in error.message


# --- the address rules themselves ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.0.8",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fec0::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::1",
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2001:db8::1",
    ],
)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"]
)
def test_public_addresses_are_not_forbidden(address: str) -> None:
    assert not is_forbidden(ipaddress.ip_address(address))


def test_the_allow_list_admits_an_address_and_its_ipv4_mapped_form() -> None:
    allowed = [ipaddress.ip_network("10.0.0.0/8")]
    assert not is_forbidden(ipaddress.ip_address("10.1.2.3"), allowed)
    assert not is_forbidden(ipaddress.ip_address("::ffff:10.1.2.3"), allowed)
    assert is_forbidden(ipaddress.ip_address("192.168.0.1"), allowed)
