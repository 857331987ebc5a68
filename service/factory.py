"""Builds the configured backends, each by its type's own constructor (`backends.registry`)."""

from __future__ import annotations

from dataclasses import replace

from opentelemetry import metrics

from backends.base import Backend
from backends.plugin import BuildContext
from backends.registry import backend_type
from service import scrub
from service.settings import Settings

__all__ = ["build_backend", "build_backends"]


def build_backends(
    settings: Settings,
    *,
    meter_provider: metrics.MeterProvider | None = None,
) -> list[Backend]:
    """Every backend the settings name: those of the routing file, or the one of MODERATION_BACKEND."""
    context = BuildContext(meter_provider=meter_provider, scrubber=scrub.outward())
    return [
        backend_type(b.type).make(
            b.name, b.options, replace(context, budget_key=settings.given_budget_key(b))
        )
        for b in settings.backends
    ]


def build_backend(settings: Settings) -> Backend:
    """The one backend of a gateway without a routing file."""
    if len(settings.backends) != 1:
        raise ValueError(f"expected one configured backend, found {len(settings.backends)}")
    return build_backends(settings)[0]
