"""The fitting stage as the settings and the routing file configure it."""

from __future__ import annotations

from backends.fetch import FetchPolicy, ImageFetcher, Lookup
from backends.registry import backend_type
from service.fitting.stage import FitRoute, Fitting
from service.routing import Router
from service.routing_file import RouteConfig
from service.settings import Settings

__all__ = ["build_fitting"]


def build_fitting(settings: Settings, router: Router, *, resolver: Lookup | None = None) -> Fitting:
    types = {backend.name: backend.type for backend in settings.backends}
    fit_routes = {route: _fit_route(route.options, types, settings.fetch) for route in router.routes}
    policy = FetchPolicy(allowed_networks=settings.fetch_allow_networks)
    return Fitting(router, fit_routes.__getitem__, ImageFetcher(policy, resolver=resolver))


def _fit_route(config: RouteConfig, types: dict[str, str], fetch_setting: str | None) -> FitRoute:
    first = types.get(config.chain[0], "")
    by_type = backend_type(first).fetch if first else "backend"
    fetch = config.fetch or fetch_setting or by_type
    return FitRoute(fetch == "gateway", dict(config.fetch_headers), config.max_tiles)
