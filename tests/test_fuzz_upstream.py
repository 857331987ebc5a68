"""Fuzzing what hostile outsiders control: host names in callers' URLs, and upstream answers (bytes and
JSON shapes, nested and oversized) through the IMS parser and the client's body cap.

Every host is refused as INVALID_URL or passes validation, never an unexpected exception; every upstream
answer is a result or a `BackendError`, and nothing it carries (codes, request ids, labels) leaves
unbounded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from backends.errors import BackendError, Kind
from backends.http import TooLarge, read_capped
from backends.image_limits import IMS_IMAGE_LIMITS
from backends.tencent.client import MAX_RESPONSE_BYTES, ImsBackend, ImsEndpoint
from backends.tencent.codes import UPSTREAM_CODE
from backends.tencent.wire import MAX_NESTING, parse_response
from common.hostnames import host_name_problem
from common.scrub import LABEL, REQUEST_ID, UNRECOGNISED, Scrubber
from emulator.hostile import deep_json
from service.validation import ValidationError, validate

MANY = settings(max_examples=1000, deadline=None)
SECRET = "AKIDfuzzSecretKeyId42"

labels = st.text(st.characters(codec="utf-8"), max_size=70)
label_chars = st.sampled_from("abcxyzAZ09-_é\u00e4\u4e2d\u200b.%")
host_labels = st.one_of(
    st.text(label_chars, min_size=0, max_size=70),
    st.builds(lambda tail: "xn--" + tail, st.text(st.sampled_from("abcz019-"), max_size=12)),
)
hosts = st.lists(host_labels, min_size=1, max_size=6).map(".".join)


@MANY
@given(hosts)
def test_every_host_name_is_a_valid_url_or_invalid_url(host: str) -> None:
    violations = []
    try:
        validate(ModerateImageRequest(url=f"http://{host}/image.png"), IMS_IMAGE_LIMITS)
    except ValidationError as error:
        violations = error.violations
    if violations:
        assert [v.reason for v in violations] == ["INVALID_URL"]
        assert all(host not in v.description for v in violations if len(host) > 3)
    else:
        # What validation lets through, the HTTP client and the resolver's codec accept too.
        url = httpx.URL(f"http://{host}/image.png")
        assert host_name_problem(url.host) is None
        url.host.encode("idna")


def _assert_bounded(error: BackendError) -> None:
    assert error.upstream_code in ("", UNRECOGNISED) or UPSTREAM_CODE.fullmatch(error.upstream_code)
    assert error.request_id in ("", UNRECOGNISED) or REQUEST_ID.fullmatch(error.request_id)
    assert SECRET not in error.message
    assert len(error.message) < 200


error_envelopes = st.fixed_dictionaries(
    {
        "Response": st.fixed_dictionaries(
            {
                "Error": st.fixed_dictionaries(
                    {"Code": st.one_of(labels, st.just(f"InternalError.{SECRET}")), "Message": labels}
                ),
                "RequestId": st.one_of(labels, st.uuids().map(str)),
            }
        )
    }
)
results = st.fixed_dictionaries(
    {
        "Response": st.fixed_dictionaries(
            {
                "Suggestion": st.sampled_from(["Pass", "Review", "Block"]),
                "Label": st.one_of(labels, st.just(SECRET)),
                "SubLabel": labels,
                "Keywords": st.lists(st.one_of(labels, st.just(f"Credential={SECRET}/x")), max_size=3),
                "RequestId": labels,
            }
        )
    }
)


@MANY
@given(st.one_of(error_envelopes, results))
def test_nothing_an_upstream_says_leaves_unbounded(document: dict[str, Any]) -> None:
    try:
        result = parse_response(json.dumps(document).encode(), Scrubber([SECRET]))
    except BackendError as error:
        _assert_bounded(error)
    else:
        assert result.label in ("", UNRECOGNISED) or LABEL.fullmatch(result.label)
        assert SECRET not in str(result)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.integers(min_value=1, max_value=12), st.integers(min_value=MAX_NESTING, max_value=5000)),
    st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"b":', "}]")]),
)
def test_nesting_past_the_limit_is_a_malformed_response(depth: int, brackets: tuple[str, str]) -> None:
    opener, closer = brackets
    nested = opener * depth + "1" + closer * depth
    body = ('{"Response": {"Suggestion": "Pass", "Padding": ' + nested + "}}").encode()
    if depth < MAX_NESTING:
        assert parse_response(body).label == ""
        return
    with pytest.raises(BackendError) as caught:
        parse_response(body)
    assert (caught.value.kind, caught.value.upstream_code) == (Kind.UNAVAILABLE, "MalformedResponse")


def test_json_deeper_than_the_interpreter_stack_is_a_malformed_response() -> None:
    with pytest.raises(BackendError) as caught:
        parse_response(deep_json())
    assert (caught.value.kind, caught.value.upstream_code) == (Kind.UNAVAILABLE, "MalformedResponse")


class _Drip:
    """A body of `size` bytes in 64 KiB chunks, produced lazily: the cap must stop reading it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"x" * 65536
        while self.sent < self.size:
            self.sent += len(chunk)
            yield chunk


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=4 * MAX_RESPONSE_BYTES), st.booleans())
async def test_the_client_reads_no_more_than_its_cap(size: int, declare_length: bool) -> None:
    drip = _Drip(size)
    try:
        body = await read_capped(size if declare_length else None, aiter(drip), MAX_RESPONSE_BYTES)
    except TooLarge:
        assert size > MAX_RESPONSE_BYTES
    else:
        assert size <= len(body) <= MAX_RESPONSE_BYTES
    assert drip.sent <= MAX_RESPONSE_BYTES + 65536


@pytest.fixture
async def redirecting() -> AsyncIterator[Callable[[str], Awaitable[ImsBackend]]]:
    """A backend whose endpoint, a real loopback server, answers every request with a redirect."""
    runners: list[web.AppRunner] = []
    backends: list[ImsBackend] = []

    async def backend(location: str) -> ImsBackend:
        async def redirect(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": location})

        app = web.Application()
        app.router.add_post("/", redirect)
        runners.append(web.AppRunner(app))
        await runners[-1].setup()
        await web.TCPSite(runners[-1], "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runners[-1].addresses[0][1]}/"
        backends.append(ImsBackend(name="redirected", endpoint=ImsEndpoint(url=url), auth=None))
        return backends[-1]

    yield backend
    for built in backends:
        await built.aclose()
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("location", ["http://xn--a/", "http://a..b/", "//xn--zz/x"])
async def test_a_redirect_to_an_invalid_host_is_failed_and_not_followed(
    redirecting: Callable[[str], Awaitable[ImsBackend]], location: str
) -> None:
    backend = await redirecting(location)
    with pytest.raises(BackendError) as caught:
        await backend.moderate(ModerateImageRequest(content=b"x" * 32), timeout=5)
    assert (caught.value.kind, caught.value.upstream_code) == (Kind.FAILED, "HTTP302")
