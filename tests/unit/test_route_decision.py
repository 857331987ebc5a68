"""The route decision: chosen once per call by the router, it carries the chain, its fingerprints, its
first backend's latency and the route's options down to fitting, the verdict cache and the router."""

from __future__ import annotations

from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from backends.base import Fingerprint
from backends.image_limits import ImageLimits
from service.deadlines import Deadline
from service.governor import Priority
from service.routing import UNKNOWN_LATENCY, Router
from service.routing_file import RouteConfig
from tests.support.backends import NamedBackend
from tests.support.routers import router, upstream


def test_exact_names_come_before_patterns_and_the_first_route_naming_a_biz_type_wins() -> None:
    kids = RouteConfig(chain=("onprem",), biz_types=("kids_*",))
    exact = RouteConfig(chain=("cloud", "onprem"), biz_types=("kids_avatars",))
    again = RouteConfig(chain=("cloud",), biz_types=("kids_avatars",))
    subject = router(kids, exact, again)
    assert subject.route_for("kids_avatars").options is exact
    assert subject.route_for("kids_chat").options is kids
    assert subject.route_for("adults").options is subject.routes[-1].options


def test_a_route_is_one_object_per_configured_route_and_carries_its_chain() -> None:
    kids = RouteConfig(chain=("onprem", "cloud"), biz_types=("kids",))
    subject = router(kids)
    route = subject.route_for("kids")
    assert route is subject.route_for("kids")
    assert [u.name for u in route.chain] == ["onprem", "cloud"]
    assert all(u is subject.upstreams[u.name] for u in route.chain)
    assert subject.routes == (route, subject.route_for("other"))


def test_fingerprints_are_read_per_call_so_a_reload_changes_them() -> None:
    subject = router(default=("cloud", "onprem"))
    route = subject.route_for("any")
    before = route.fingerprints()
    assert before == tuple(u.backend.fingerprint for u in route.chain)
    backend = route.chain[1].backend
    assert isinstance(backend, NamedBackend)
    backend.fingerprint = Fingerprint.of("named", "onprem", "reloaded")
    assert route.fingerprints() != before
    assert route.fingerprints()[0] == before[0]


def test_the_first_backends_latency_is_what_it_has_learnt_or_the_unknown_default() -> None:
    route = router(default=("cloud", "onprem")).route_for("any")
    assert route.first_latency() == UNKNOWN_LATENCY
    route.chain[1].retrier.latency.observe(0.05)
    assert route.first_latency() == UNKNOWN_LATENCY
    route.chain[0].retrier.latency.observe(0.2)
    assert route.first_latency() == route.chain[0].retrier.latency.seconds > 0


def test_route_names_key_a_fleets_slices_and_the_default_is_named_so() -> None:
    subject = router(RouteConfig(chain=("onprem",), biz_types=("kids", "teens")))
    assert subject.route_for("kids").name == "kids+teens"
    assert subject.route_for("other").name == "default"


async def test_the_router_tries_the_chain_of_the_route_it_is_handed() -> None:
    subject = router(RouteConfig(chain=("onprem",), biz_types=("kids",)), default=("cloud",))
    request = ModerateImageRequest(biz_type="kids", url="https://a.example/x.png")
    try:
        # The route handed down decides, whatever the request's BizType says.
        answer = await subject.moderate(
            request, subject.route_for("other"), Deadline.for_call(5.0), Priority.INTERACTIVE
        )
    finally:
        await subject.aclose()
    assert (answer.backend, answer.fallback) == ("cloud", False)


def test_a_routes_image_limits_are_what_every_backend_of_its_chain_takes() -> None:
    roomy = ImageLimits(max_side=20_000, max_bytes=5_000, formats=frozenset({"JPEG", "PNG", "TIFF"}))
    strict = ImageLimits(min_side=100, max_side=8_000, max_aspect_ratio=10, formats=frozenset({"PNG"}))
    subject = Router(
        [upstream("cloud", roomy), upstream("onprem", strict)],
        [RouteConfig(chain=("cloud",), biz_types=("roomy",))],
        RouteConfig(chain=("cloud", "onprem")),
    )
    assert subject.route_for("roomy").image_limits == roomy
    assert subject.route_for("other").image_limits == ImageLimits(
        min_side=100, max_side=8_000, max_aspect_ratio=10, max_bytes=5_000, formats=frozenset({"PNG"})
    )
