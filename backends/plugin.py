"""What a backend type declares: its options and its constructor. `backends.registry` names the types.

Everything the gateway needs to know about a type is declared here or in its options
(`backends.options.BackendOptions`): its rate budget, attempts and fleet budget key, whether and at what
price its calls are billed, and who downloads its URL images. Its grammar of upstream codes it applies
itself, where they enter (`BackendError` keeps the bound of any vendor's). `service/` names no type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from opentelemetry import metrics

from backends.base import Backend
from backends.options import BackendOptions
from common.scrub import Scrubber

__all__ = ["BackendType", "BuildContext"]

OptionsT = TypeVar("OptionsT", bound=BackendOptions)


@dataclass(frozen=True)
class BuildContext:
    """What the gateway lends every backend it builds."""

    # Where a backend's own instruments go (the gateway's /metrics); None: they count nowhere.
    meter_provider: metrics.MeterProvider | None = None
    # The gateway's outward scrubber (answers, spans, metrics, logs): a backend adds to it the secrets
    # it learns after start, such as rotated or temporary keys. None: nothing outside it to tell.
    scrubber: Scrubber | None = None


@dataclass(frozen=True)
class BackendType(Generic[OptionsT]):
    """One kind of backend.

    `options` is read from the environment when the type is the gateway's single backend
    (`MODERATION_BACKEND`) and from the type's table when a routing file names it; `build` makes a
    backend from them (ValueError when they cannot work together, such as an unreadable CA file).
    """

    name: str
    summary: str
    options: type[OptionsT]
    build: Callable[[str, OptionsT, BuildContext], Backend]
    # Variables whose presence makes this type the default single backend (its credentials).
    selected_by: tuple[str, ...] = ()
    # Whether the type can be the single backend configured from the environment alone.
    from_environment: bool = True
    # Whether a routing-file table starts from the environment's values (then overrides them).
    table_extends_environment: bool = False
    # Who downloads a `url` image for this type by default (`MODERATION_FETCH` and a route's `fetch` say
    # otherwise): `gateway` (it fetches, fits and sends the bytes) or `backend` (the URL is passed on).
    fetch: Literal["gateway", "backend"] = "backend"

    def options_from_table(self, table: Mapping[str, object], environ: Mapping[str, str]) -> OptionsT:
        if not self.table_extends_environment:
            return self.options.from_table({**self.options.inherited(environ), **table})
        inherited = self.options.from_environment(environ).model_dump(exclude_unset=True)
        return self.options.from_table({**inherited, **table})

    def make(self, name: str, options: BackendOptions, context: BuildContext) -> Backend:
        if not isinstance(options, self.options):
            raise TypeError(f"the {self.name} backend takes {self.options.__name__}")
        return self.build(name, options, context)
