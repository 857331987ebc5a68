"""The fitting stage as the settings and the routing file configure it."""

from __future__ import annotations

from backends.fetch import FetchPolicy, ImageFetcher, Lookup
from backends.registry import backend_type
from service.fitting.limits import IMS_LIMITS, LIMITS_BY_TYPE
from service.fitting.stage import FitRoute, Fitting
from service.routes import RouteConfig
from service.routing import Router
from service.settings import Settings

__all__ = ["build_fitting"]


def build_fitting(settings: Settings, router: Router, *, resolver: Lookup | None = None) -> Fitting:
    types = {backend.name: backend.type for backend in settings.backends}
    routes = settings.routes
    configs = (
        [*routes.routes, routes.default] if routes is not None else [RouteConfig(chain=(settings.backend,))]
    )
    # Keyed by the BizTypes the router's routes name (the default's: none); of two routes naming the
    # same ones, the router picks the first.
    by_biz_types: dict[tuple[str, ...], FitRoute] = {}
    for config in configs:
        by_biz_types.setdefault(config.biz_types, _fit_route(config, types, settings.fetch))

    def route_for(biz_type: str) -> FitRoute:
        return by_biz_types.get(router.route_for(biz_type).biz_types, FitRoute())

    policy = FetchPolicy(allowed_networks=settings.fetch_allow_networks)
    return Fitting(router, route_for, ImageFetcher(policy, resolver=resolver))


def _fit_route(config: RouteConfig, types: dict[str, str], fetch_setting: str | None) -> FitRoute:
    first = types.get(config.chain[0], "")
    by_type = backend_type(first).fetch if first else "backend"
    fetch = config.fetch or fetch_setting or by_type
    limits = LIMITS_BY_TYPE.get(first, IMS_LIMITS)
    return FitRoute(fetch == "gateway", dict(config.fetch_headers), config.max_tiles, limits)
