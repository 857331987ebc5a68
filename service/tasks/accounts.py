"""Whose account a task belongs to: the hashed account of its route's first backend, the namespace the
verdict cache keeps that account's verdicts in (`service.cache.keys`). A task's keys in Redis live in
that namespace, so deployments on different accounts sharing one Redis never see each other's tasks."""

from __future__ import annotations

from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from service.cache.keys import NO_ACCOUNT
from service.routing import Route, Router

__all__ = ["TaskAccounts"]


class TaskAccounts:
    def __init__(self, router: Router) -> None:
        self._router = router

    @property
    def served(self) -> tuple[str, ...]:
        """Every account this gateway's routes spend, each once, in the routes' order."""
        return tuple(dict.fromkeys(_account(route) for route in self._router.routes))

    def of(self, request: ModerateImageRequest) -> str:
        """The account of the route `request` takes."""
        return _account(self._router.route_for(request.biz_type))


def _account(route: Route) -> str:
    return route.fingerprints()[0].account or NO_ACCOUNT
