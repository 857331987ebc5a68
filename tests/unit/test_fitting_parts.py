"""Fitting's pure parts: the plan for each shape of image, the route options, the routes' defaults."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from PIL import Image

from backends.fetch import FetchPolicy, ImageFetcher
from backends.image_limits import IMS_IMAGE_LIMITS, ImageLimits
from service.deadlines import Deadline
from service.fitting import stage
from service.fitting.plan import FitRefused, Tile, plan
from service.fitting.render import Header, read_header
from service.fitting.setup import build_fitting
from service.fitting.stage import FitRoute, Fitting
from service.governor import Priority, RateGovernor
from service.retry import Retrier, RetryPolicy
from service.routing import Router, Upstream
from service.routing_file import RouteConfig, RoutesError, load_routes
from service.settings import Settings, load_settings
from service.validation import ValidationError, validate
from tests.support.backends import NamedBackend
from tests.support.routers import router, upstream

ENV = {"CLOUD_ID": "AKIDcloud", "CLOUD_KEY": "cloud-key"}


def test_an_image_within_the_limits_is_left_alone() -> None:
    fitted = plan(400, 300, IMS_IMAGE_LIMITS, max_tiles=8)
    assert (fitted.resized, fitted.tiles) == (False, ())


def test_a_large_photo_is_downscaled_to_the_working_size() -> None:
    fitted = plan(12_000, 9_000, IMS_IMAGE_LIMITS, max_tiles=8)
    assert (fitted.scaled_width, fitted.scaled_height, fitted.tiles) == (4096, 3072, ())


def test_a_large_jpeg_is_decoded_reduced_instead() -> None:
    fitted = plan(12_000, 9_000, IMS_IMAGE_LIMITS, max_tiles=8, draft=True)
    assert (fitted.scaled_width, fitted.scaled_height) == (3_000, 2_250)


def test_a_long_screenshot_is_tiled_at_full_resolution_with_overlaps() -> None:
    fitted = plan(1_080, 30_000, IMS_IMAGE_LIMITS, max_tiles=8)
    assert (fitted.scaled_width, fitted.scaled_height) == (1_080, 30_000)
    assert fitted.tiles[0] == Tile(0, 9_999)
    assert fitted.tiles[-1].end == 30_000
    assert all(a.end > b.start for a, b in zip(fitted.tiles, fitted.tiles[1:], strict=False))
    assert all(tile.end - tile.start < IMS_IMAGE_LIMITS.max_side for tile in fitted.tiles)


def test_an_extreme_aspect_ratio_is_tiled_within_the_ratio() -> None:
    fitted = plan(40_000, 60, IMS_IMAGE_LIMITS, max_tiles=64)
    assert all((tile.end - tile.start) < IMS_IMAGE_LIMITS.max_aspect_ratio * 60 for tile in fitted.tiles)
    assert len(fitted.tiles) == 9


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        (50, 400, "IMAGE_DIMENSIONS_OUT_OF_RANGE"),
        (40_001, 1_000, "IMAGE_DIMENSIONS_OUT_OF_RANGE"),
        (20_000, 9_000, "IMAGE_DIMENSIONS_OUT_OF_RANGE"),
        (1_080, 30_000, "TOO_MANY_TILES"),
    ],
)
def test_what_cannot_be_fitted_is_refused(width: int, height: int, reason: str) -> None:
    with pytest.raises(FitRefused) as refused:
        plan(width, height, IMS_IMAGE_LIMITS, max_tiles=3)
    assert refused.value.reason == reason


def png_header(width: int, height: int) -> bytes:
    """A real PNG whose header says `width` x `height`: enough for anything that reads only headers."""
    buffer = io.BytesIO()
    Image.new("RGB", (60, 60)).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def test_a_header_declaring_too_many_pixels_is_named_as_such() -> None:
    with pytest.raises(FitRefused) as refused:
        read_header(png_header(20_000, 20_000))
    assert refused.value.reason == "IMAGE_DIMENSIONS_OUT_OF_RANGE"


async def test_an_image_needing_more_than_the_memory_budget_is_refused_before_any_work() -> None:
    routing = router()
    fitting = Fitting(routing, lambda _: FitRoute(), ImageFetcher(FetchPolicy()), memory_budget=64 * 1024**2)
    # Over the backend's 10,000 px: it must be decoded to be downscaled.
    request = ModerateImageRequest(content=png_header(10_000, 8_000))
    try:
        with pytest.raises(ValidationError) as refused:
            fitting.checked(request, routing.route_for(""))
    finally:
        await fitting.aclose()
    [violation] = refused.value.violations
    assert (violation.field, violation.reason) == ("content", "IMAGE_DIMENSIONS_OUT_OF_RANGE")
    assert "more than the gateway gives one image (64 MiB)" in violation.description


async def test_an_image_over_its_routes_byte_limit_is_fitted_not_refused() -> None:
    small = ImageLimits(max_bytes=50_000)
    routing = Router(
        [upstream("cloud"), upstream("small", small)],
        [RouteConfig(chain=("small",), biz_types=("small",))],
        RouteConfig(chain=("cloud",)),
    )
    fitting = Fitting(routing, lambda _: FitRoute(), ImageFetcher(FetchPolicy()))
    noise = io.BytesIO()
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(noise, format="PNG")
    request = ModerateImageRequest(content=noise.getvalue(), biz_type="small")
    route = routing.route_for("small")
    try:
        # Validation alone refuses it; fitting, which re-encodes it within the route's limit, takes it.
        with pytest.raises(ValidationError):
            validate(request, route.image_limits)
        assert fitting.checked(request, route)
    finally:
        await fitting.aclose()


async def test_an_image_sent_as_given_has_its_header_read_once_and_the_request_itself_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[bytes] = []

    def counted(content: bytes) -> Header:
        reads.append(content)
        return read_header(content)

    monkeypatch.setattr(stage, "read_header", counted)
    sent: list[ModerateImageRequest] = []

    class Recording(NamedBackend):
        async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
            sent.append(request)
            return await super().moderate(request, timeout=timeout)

    backend, governor = Recording("cloud"), RateGovernor(1000)
    cloud = Upstream(backend, governor, Retrier(backend, RetryPolicy(), governor=governor))
    routing = Router([cloud], [], RouteConfig(chain=("cloud",)))
    fitting = Fitting(routing, lambda _: FitRoute(), ImageFetcher(FetchPolicy()))
    request = ModerateImageRequest(content=png_header(400, 300))
    route = routing.route_for("")
    try:
        fit = fitting.fit(request, route)
        assert fit is not None
        answer = await fitting.moderate(request, route, Deadline.for_call(None, cap=5.0), Priority.BATCH, fit)
    finally:
        await fitting.aclose()
    assert len(reads) == 1
    # The request as the caller sent it: its bytes were not copied into another message.
    assert len(sent) == 1
    assert sent[0] is request
    assert (answer.normalization.original_width, answer.normalization.reencoded) == (400, "")


def write(tmp_path: Path, route: str) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(
        f"""
[backends.cloud]
type = "tencent"
secret_id_env = "CLOUD_ID"
secret_key_env = "CLOUD_KEY"

[backends.onprem]
type = "local"

[[routes]]
biz_types = ["kids"]
chain = ["onprem"]

[default]
chain = ["cloud"]
{route}
""",
        encoding="utf-8",
    )
    return path


def test_route_fetch_options_load(tmp_path: Path) -> None:
    routes = load_routes(
        write(
            tmp_path, 'fetch = "backend"\nmax_tiles = 3\nfetch_headers = { Referer = "https://app.example/" }'
        ),
        ENV,
    )
    assert (routes.default.fetch, routes.default.max_tiles) == ("backend", 3)
    assert routes.default.fetch_headers == {"Referer": "https://app.example/"}


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        ('fetch = "cdn"', "fetch"),
        ("max_tiles = 0", "max_tiles"),
        ('fetch_headers = { Host = "x" }', "sets these headers itself: Host"),
        ('fetch_headers = { Referer = "a\\nb" }', "fetch_headers"),
    ],
)
def test_bad_route_fetch_options_are_reported(tmp_path: Path, route: str, problem: str) -> None:
    with pytest.raises(RoutesError) as raised:
        load_routes(write(tmp_path, route), ENV)
    assert problem in str(raised.value)


async def test_the_gateway_fetches_for_tencent_routes_by_default(tmp_path: Path) -> None:
    routes = load_routes(write(tmp_path, ""), ENV)
    settings = Settings(backend="tencent", backends=tuple(routes.backends.values()), routes=routes)
    routing = router(RouteConfig(chain=("onprem",), biz_types=("kids",)), default=("cloud",))
    fitting = build_fitting(settings, routing)
    try:
        assert fitting.route_options(routing.route_for("other")).fetch
        assert not fitting.route_options(routing.route_for("kids")).fetch
    finally:
        await fitting.aclose()


def test_moderation_fetch_is_read_from_the_environment() -> None:
    settings = load_settings({"MODERATION_BACKEND": "local", "MODERATION_FETCH": "Gateway"})
    assert settings.fetch == "gateway"
