"""Routers over in-process named backends, for the unit tests of routing and of what reads a route."""

from __future__ import annotations

from backends.image_limits import IMS_IMAGE_LIMITS, ImageLimits
from service.governor import RateGovernor
from service.retry import Retrier, RetryPolicy
from service.routing import Router, Upstream
from service.routing_file import RouteConfig
from tests.support.backends import NamedBackend


def upstream(name: str, limits: ImageLimits = IMS_IMAGE_LIMITS) -> Upstream:
    backend = NamedBackend(name, limits)
    governor = RateGovernor(1000)
    return Upstream(backend, governor, Retrier(backend, RetryPolicy(), governor=governor))


def router(*routes: RouteConfig, default: tuple[str, ...] = ("cloud",)) -> Router:
    names = {name for route in (*routes, RouteConfig(chain=default)) for name in route.chain}
    return Router([upstream(name) for name in sorted(names)], list(routes), RouteConfig(chain=default))
