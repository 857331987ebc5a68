"""The gateway fetches URL images itself and fits images to IMS's limits: real gRPC clients, the IMS
emulator (which enforces the limits, so an unfitted image fails there) and a loopback origin server
with a hotlink check, redirects, a slow drip, an oversize body and a wrong content type."""

from __future__ import annotations

import asyncio
import io
import ipaddress
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from PIL import Image, ImageDraw

from emulator import ImsEmulator
from emulator.images import make_jpeg
from service.routing_file import RouteConfig, RoutesConfig
from service.server import Gateway
from service.telemetry import setup_telemetry
from tests.support.gateway import GatewayFactory, open_channel
from tests.support.richstatus import RichError, rich_error

Stub = moderation_service_pb2_grpc.ModerationServiceStub
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
REFERER = "https://app.example/"
BLOCK_JPEG = make_jpeg(marker="IMSEMU:Block:Porn:SexBehavior:97")
MAGENTA = (255, 0, 255)
HUGE_INK = (8_000, 4_000, 800, 400)


def inked(width: int, height: int, ink: tuple[int, int, int, int], image_format: str = "PNG") -> bytes:
    """A white image with a magenta patch (x, y, width, height): the emulator reads it as ad text."""
    image = Image.new("RGB", (width, height), "white")
    x, y, w, h = ink
    ImageDraw.Draw(image).rectangle((x, y, x + w - 1, y + h - 1), fill=MAGENTA)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    """The loopback origin: its base URL as http://127.0.0.1:<port>."""

    async def photo(_: web.Request) -> web.Response:
        return web.Response(body=BLOCK_JPEG, content_type="image/jpeg")

    async def hotlinked(request: web.Request) -> web.Response:
        if request.headers.get("Referer") != REFERER:
            return web.Response(status=403, text="hotlinking is not allowed: secret-origin-text")
        return web.Response(body=BLOCK_JPEG, content_type="image/jpeg")

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/photo.jpg")

    async def loop_a(_: web.Request) -> web.Response:
        raise web.HTTPFound("/loop-b")

    async def loop_b(_: web.Request) -> web.Response:
        raise web.HTTPFound("/loop-a")

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        for byte in BLOCK_JPEG:
            await response.write(bytes([byte]))
            await asyncio.sleep(0.05)
        return response

    async def oversize(_: web.Request) -> web.Response:
        return web.Response(body=b"\0" * (30 * 1024 * 1024 + 1), content_type="image/jpeg")

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=inked(10_400, 5_200, HUGE_INK, "JPEG"), content_type="image/jpeg")

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html>not an image</html>" * 10, content_type="text/html")

    app = web.Application()
    for path, handler in [
        ("/photo.jpg", photo),
        ("/copy.jpg", photo),
        ("/hotlinked.jpg", hotlinked),
        ("/redirect", redirect),
        ("/loop-a", loop_a),
        ("/loop-b", loop_b),
        ("/drip.jpg", drip),
        ("/oversize.jpg", oversize),
        ("/page.html", page),
        ("/huge.jpg", huge),
    ]:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def fetching_routes(**route: object) -> RoutesConfig:
    return RoutesConfig({}, (), RouteConfig(chain=("tencent",), **route))


@pytest.fixture
async def fetching(make_gateway: GatewayFactory) -> Gateway:
    """A gateway that fetches URL images itself (the tencent default), loopback allowed."""
    return await make_gateway(
        fetch=None, fetch_allow_networks=LOOPBACK, routes=fetching_routes(fetch_headers={"Referer": REFERER})
    )


async def moderate(gateway: Gateway, request: ModerateImageRequest) -> ModerateImageResponse | RichError:
    async with open_channel(gateway) as channel:
        try:
            result: ModerateImageResponse = await Stub(channel).ModerateImage(request, timeout=10)
            return result
        except grpc.aio.AioRpcError as error:
            return rich_error(error)


async def answer(gateway: Gateway, request: ModerateImageRequest) -> ModerateImageResponse:
    outcome = await moderate(gateway, request)
    assert isinstance(outcome, ModerateImageResponse), outcome
    return outcome


async def refusal(gateway: Gateway, request: ModerateImageRequest) -> RichError:
    outcome = await moderate(gateway, request)
    assert isinstance(outcome, RichError), outcome
    return outcome


# --- fetching ---------------------------------------------------------------------------------


async def test_the_gateway_fetches_and_sends_file_content(
    fetching: Gateway, origin: str, emulator: ImsEmulator
) -> None:
    result = await answer(fetching, ModerateImageRequest(url=f"{origin}/photo.jpg"))
    assert result.suggestion == Suggestion.SUGGESTION_BLOCK
    sent = emulator.stats.received[-1][1]
    assert "FileContent" in sent
    assert "FileUrl" not in sent
    # Sent as it was: nothing re-encoded.
    assert (result.normalization.original_width, result.normalization.reencoded) == (256, "")


async def test_the_same_picture_at_two_urls_is_paid_once(
    make_gateway: GatewayFactory, origin: str, emulator: ImsEmulator
) -> None:
    gateway = await make_gateway(fetch="gateway", fetch_allow_networks=LOOPBACK, cache="memory")
    first = await answer(gateway, ModerateImageRequest(url=f"{origin}/photo.jpg"))
    second = await answer(gateway, ModerateImageRequest(url=f"{origin}/copy.jpg"))
    assert (first.cached, second.cached) == (False, True)
    assert emulator.stats.billed == 1


async def test_route_headers_pass_a_hotlink_check(fetching: Gateway, origin: str) -> None:
    result = await answer(fetching, ModerateImageRequest(url=f"{origin}/hotlinked.jpg"))
    assert result.suggestion == Suggestion.SUGGESTION_BLOCK


async def test_a_hotlink_refusal_is_named_and_its_body_not_relayed(
    make_gateway: GatewayFactory, origin: str
) -> None:
    gateway = await make_gateway(fetch="gateway", fetch_allow_networks=LOOPBACK)
    error = await refusal(gateway, ModerateImageRequest(url=f"{origin}/hotlinked.jpg"))
    assert (error.code, error.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IMAGE_DOWNLOAD_FAILED")
    assert "HTTP 403" in error.message
    assert "secret-origin-text" not in error.message


async def test_redirects_are_followed_and_a_loop_is_named(fetching: Gateway, origin: str) -> None:
    result = await answer(fetching, ModerateImageRequest(url=f"{origin}/redirect"))
    assert result.suggestion == Suggestion.SUGGESTION_BLOCK
    error = await refusal(fetching, ModerateImageRequest(url=f"{origin}/loop-a"))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "redirects loop" in error.message


async def test_a_private_address_is_refused_without_the_allow_list(
    make_gateway: GatewayFactory, origin: str, emulator: ImsEmulator
) -> None:
    gateway = await make_gateway(fetch="gateway")
    port = origin.rsplit(":", 1)[1]
    error = await refusal(gateway, ModerateImageRequest(url=f"http://localhost:{port}/photo.jpg"))
    assert (error.code, error.bad_request.field_violations[0].field if error.bad_request else "") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "url",
    )
    assert "not publicly routable" in error.message
    assert emulator.stats.requests == 0


async def test_an_unreachable_host_is_named(fetching: Gateway, origin: str) -> None:
    # A port nothing listens on: the origin's own, once it is closed, is not guaranteed; port 9 is discard.
    error = await refusal(fetching, ModerateImageRequest(url="http://127.0.0.1:9/photo.jpg"))
    assert (error.code, error.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IMAGE_DOWNLOAD_FAILED")
    assert "network error" in error.message


async def test_a_slow_drip_ends_within_the_call_deadline(fetching: Gateway, origin: str) -> None:
    async with open_channel(fetching) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(channel).ModerateImage(ModerateImageRequest(url=f"{origin}/drip.jpg"), timeout=1.5)
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IMAGE_DOWNLOAD_FAILED")
    assert "no complete answer" in error.message


async def test_an_oversize_download_is_refused(fetching: Gateway, origin: str) -> None:
    error = await refusal(fetching, ModerateImageRequest(url=f"{origin}/oversize.jpg"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "larger than 30 MB" in error.message


async def test_a_body_that_is_no_image_is_named(
    fetching: Gateway, origin: str, emulator: ImsEmulator
) -> None:
    error = await refusal(fetching, ModerateImageRequest(url=f"{origin}/page.html"))
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_UNSUPPORTED")
    assert "not an image" in error.message
    assert "<html>" not in error.message
    assert emulator.stats.requests == 0


# --- fitting ----------------------------------------------------------------------------------


@pytest.fixture
async def reading(make_gateway: GatewayFactory, emulator: ImsEmulator) -> Gateway:
    emulator.config.read_ink = True
    return await make_gateway()


async def test_a_too_large_photo_is_downscaled_and_its_text_mapped_back(
    reading: Gateway, emulator: ImsEmulator
) -> None:
    photo = inked(10_400, 5_200, HUGE_INK, "JPEG")
    result = await answer(reading, ModerateImageRequest(content=photo))
    normalization = result.normalization
    assert (normalization.original_width, normalization.original_height) == (10_400, 5_200)
    assert (normalization.sent_width, normalization.sent_height, normalization.reencoded) == (
        2600,
        1300,
        "JPEG",
    )
    assert result.suggestion == Suggestion.SUGGESTION_BLOCK
    location = result.ocr_results[0].details[0].location
    assert location.x == pytest.approx(8_000, abs=60)
    assert location.y == pytest.approx(4_000, abs=60)
    assert location.width == pytest.approx(800, abs=120)
    assert emulator.stats.billed == 1


def two_page_tiff() -> bytes:
    """A scan's first page with ink, its second without: only the first is moderated."""
    first = Image.open(io.BytesIO(inked(300, 200, (10, 10, 40, 40))))
    buffer = io.BytesIO()
    first.save(buffer, "TIFF", save_all=True, append_images=[Image.new("RGB", (300, 200), "white")])
    return buffer.getvalue()


async def test_a_fetched_image_is_fitted_too(fetching: Gateway, origin: str, emulator: ImsEmulator) -> None:
    emulator.config.read_ink = True
    result = await answer(fetching, ModerateImageRequest(url=f"{origin}/huge.jpg"))
    assert (result.normalization.original_width, result.normalization.sent_width) == (10_400, 2_600)
    assert result.suggestion == Suggestion.SUGGESTION_BLOCK
    location = result.ocr_results[0].details[0].location
    assert [location.x, location.y] == pytest.approx(HUGE_INK[:2], abs=40)


@pytest.mark.parametrize(
    "image",
    [two_page_tiff(), inked(300, 200, (10, 10, 40, 40), "AVIF")],
    ids=["tiff-2-pages", "avif"],
)
async def test_a_format_the_backend_does_not_take_is_transcoded(reading: Gateway, image: bytes) -> None:
    result = await answer(reading, ModerateImageRequest(content=image))
    assert (result.normalization.reencoded, result.normalization.sent_width) == ("JPEG", 300)
    assert result.suggestion == Suggestion.SUGGESTION_BLOCK


async def test_a_long_screenshot_is_tiled_and_its_text_found_on_the_right_tile(
    reading: Gateway, emulator: ImsEmulator
) -> None:
    screenshot = inked(1_080, 30_000, (100, 22_000, 600, 300))
    result = await answer(reading, ModerateImageRequest(content=screenshot))
    assert (result.normalization.tiles, result.attempts, emulator.stats.billed) == (4, 4, 4)
    assert result.suggestion == Suggestion.SUGGESTION_BLOCK
    [ocr] = [detail for r in result.ocr_results for detail in r.details]
    # Seen by the third and fourth tiles (they overlap there), reported once; the emulator reads
    # JPEG tiles at 1/8 of their size, hence the tolerance.
    location = ocr.location
    assert [location.x, location.y] == pytest.approx([100, 22_000], abs=10)
    assert [location.width, location.height] == pytest.approx([600, 300], abs=10)


def billed_calls(reader: InMemoryMetricReader) -> float:
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "moderation.billed_calls"
        for point in metric.data.data_points
    ]
    return sum(float(point.value) for point in points if isinstance(point, NumberDataPoint))


async def test_every_tile_is_billed_in_the_cost_metrics(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    emulator.config.read_ink = True
    reader = InMemoryMetricReader()
    gateway = await make_gateway(telemetry=setup_telemetry({}, metric_readers=[reader]))
    result = await answer(gateway, ModerateImageRequest(content=inked(1_080, 20_000, (0, 0, 60, 60))))
    assert (result.normalization.tiles, emulator.stats.billed) == (3, 3)
    assert billed_calls(reader) == 3


async def test_more_tiles_than_allowed_is_refused_before_any_call(
    reading: Gateway, emulator: ImsEmulator
) -> None:
    screenshot = inked(1_080, 30_000, (0, 0, 60, 60))
    error = await refusal(reading, ModerateImageRequest(content=screenshot, max_tiles=2))
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_TILES")
    assert "takes 4 tiles" in error.message
    assert "at most 2" in error.message
    assert emulator.stats.requests == 0


async def test_a_cached_verdict_answers_only_requests_its_image_was_checked_for(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    # A hit skips fitting's check of the image, which passed when its verdict was cached, unless the
    # request asks for fewer tiles than its route allows: then its own cap is checked.
    gateway = await make_gateway(cache="memory")
    screenshot = inked(1_080, 30_000, (0, 0, 60, 60))
    first = await answer(gateway, ModerateImageRequest(content=screenshot))
    again = await answer(gateway, ModerateImageRequest(content=screenshot, max_tiles=4))
    assert (first.cached, again.cached, emulator.stats.billed) == (False, True, 4)
    error = await refusal(gateway, ModerateImageRequest(content=screenshot, max_tiles=2))
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_TILES")
    assert emulator.stats.billed == 4


async def test_a_too_small_fetched_image_is_refused_never_upscaled(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    gateway = await make_gateway()
    error = await refusal(gateway, ModerateImageRequest(content=inked(40, 4_000, (0, 0, 10, 10))))
    assert (error.code, error.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "IMAGE_DIMENSIONS_OUT_OF_RANGE",
    )
    assert "never upscaled" in error.message
    assert emulator.stats.requests == 0
