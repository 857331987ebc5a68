"""Which generated blocks live on which docs page."""

from __future__ import annotations

from collections.abc import Mapping

from docsgen import api, cli, errors, metrics, settings
from docsgen.blocks import Renderers

__all__ = ["PAGES"]

PAGES: Mapping[str, Renderers] = {
    "reference/settings.md": {"environment": settings.environment},
    "reference/routing-keys.md": {"routing-keys": settings.routing_keys},
    "reference/errors.md": {"backend-errors": errors.backend_errors, "gateway-errors": errors.gateway_errors},
    "reference/metrics.md": {"metrics": metrics.table},
    "reference/cli.md": {"cli": cli.reference},
    "reference/api.md": {"api": api.reference},
}
