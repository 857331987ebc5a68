"""Builds the configured backends, each by its type's own constructor (`backends.registry`)."""

from __future__ import annotations

from backends.base import Backend
from backends.plugin import BuildContext
from backends.registry import backend_type
from service.settings import Settings
from service.telemetry import Telemetry

__all__ = ["build_backend", "build_backends"]


def build_backends(settings: Settings, telemetry: Telemetry | None = None) -> list[Backend]:
    """Every backend the settings name: those of the routing file, or the one of MODERATION_BACKEND.

    With `telemetry`, their instruments count in its metrics and the secrets they learn later (rotated
    keys) go to its outward scrubber, the one the gateway built with that telemetry shows through."""
    context = (
        BuildContext(meter_provider=telemetry.meter_provider, scrubber=telemetry.outward)
        if telemetry is not None
        else BuildContext()
    )
    return [backend_type(b.type).make(b.name, b.options, context) for b in settings.backends]


def build_backend(settings: Settings, telemetry: Telemetry | None = None) -> Backend:
    """The one backend of a gateway without a routing file."""
    if len(settings.backends) != 1:
        raise ValueError(f"expected one configured backend, found {len(settings.backends)}")
    return build_backends(settings, telemetry)[0]
