"""Where fitting meets the call path: `fetched` before the verdict cache, `checked` after a miss (a hit's
image was checked when its verdict was cached), `moderate` instead of the router's own.

`fetched` downloads a URL image when its route says the gateway fetches (so the cache keys the
picture, not the address: the same picture at two URLs is paid once); `checked` checks that the image
can be fitted, tiles and all, before anything is spent. `moderate` fits it off the event loop within a memory
budget and sends each piece through the router: every tile is a billed call that the route's budgets,
retries and cost metrics see like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from backends.errors import BackendError, Kind
from backends.fetch import ImageFetcher
from backends.image_limits import ImageLimits
from backends.local.admission import FairBudget, NoRoom
from service.auth import CALLER
from service.deadlines import Deadline
from service.errors import CallFailure
from service.fitting.combine import combined
from service.fitting.plan import FitRefused, Plan, plan
from service.fitting.render import Header, Piece, as_given, decode_memory, read_header, render
from service.governor import Priority
from service.routing import Route, Router
from service.validation import (
    MIN_IMAGE_BYTES,
    FieldViolation,
    ValidationError,
    parameter_violations,
    validate,
)

__all__ = ["DEFAULT_MEMORY_BUDGET", "Fit", "FitRoute", "Fitting", "Prepared"]

# Memory for the pixels of all images being fitted at once (estimated from their headers); it bounds
# the gateway's RSS. One 12,000 x 9,000 PNG takes about 630 MiB; the same photo as a JPEG, decoded at a
# quarter of its size, 26 MiB.
DEFAULT_MEMORY_BUDGET = 1024**3


@dataclass(frozen=True)
class FitRoute:
    """A route's fitting options (`service.routing_file.RouteConfig`); it is fitted to the route's limits
    (`Route.image_limits`)."""

    fetch: bool = False
    fetch_headers: dict[str, str] = field(default_factory=dict)
    max_tiles: int = 8


@dataclass(frozen=True)
class Fit:
    """How an image is sent: its header and the plan for it, read once per call and carried from the
    check to `Fitting.moderate`."""

    header: Header
    plan: Plan


@dataclass(frozen=True)
class Prepared:
    request: ModerateImageRequest
    # Set when the image passed fitting's checks, which stand in for validation's own image checks.
    fit: Fit | None


class Fitting:
    def __init__(
        self,
        router: Router,
        routes: Callable[[Route], FitRoute],
        fetcher: ImageFetcher,
        *,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        self._router = router
        self._routes = routes
        self._fetcher = fetcher
        self._memory = FairBudget(memory_budget)
        # The most bytes the gateway takes (its receive limit is sized by it): an image over its route's
        # own limit but within this one is re-encoded to fit, not refused.
        self._largest_image = max(u.backend.image_limits.max_bytes for u in router.upstreams.values())

    async def fetched(self, request: ModerateImageRequest, route: Route, deadline: Deadline) -> Prepared:
        """The request with its URL image downloaded and checked, when the route has the gateway fetch;
        else the request as it is. Raises ValidationError or CallFailure."""
        options = self.route_options(route)
        if request.WhichOneof("image") != "url" or not options.fetch:
            return Prepared(request, fit=None)
        # Everything else about the request is checked before anything is downloaded.
        validate(request, route.image_limits)
        content = await self._download(request.url, options, deadline)
        request = _with_content(request, content)
        return Prepared(request, fit=self._planned(request, route, field_name="url", content=content))

    def checked(self, request: ModerateImageRequest, route: Route) -> bool:
        """Whether the request's content can be fitted to the route's backends (`fit`)."""
        return self.fit(request, route) is not None

    def fit(self, request: ModerateImageRequest, route: Route) -> Fit | None:
        """How the request's content is fitted to the route's backends, tiles and all, which stands in for
        validation's own image checks; None: not an image Pillow reads (validation says why, or the
        backend measures it: SVG, HEIC). Raises ValidationError."""
        if request.WhichOneof("image") != "content":
            return None
        # Read once: each read of a message's bytes field is a copy of them.
        content = request.content
        if not MIN_IMAGE_BYTES <= len(content) <= self._largest_image:
            return None
        try:
            return self._planned(request, route, field_name="content", content=content)
        except _Unread:
            return None

    def fits_as_cached(self, request: ModerateImageRequest, route: Route) -> bool:
        """Whether a cached verdict's image needs no check of its own: it was fitted within the route's
        tile cap when cached; a request asking for fewer tiles is checked against its own cap."""
        return request.max_tiles == 0 or request.max_tiles >= self.route_options(route).max_tiles

    async def moderate(
        self,
        request: ModerateImageRequest,
        route: Route,
        deadline: Deadline,
        priority: Priority,
        fit: Fit | None = None,
    ) -> ModerateImageResponse:
        """The router's answer for the fitted image (combined over its tiles). Raises CallFailure.
        `fit`: the image's, as `fit` found it for this call (else it is read here)."""
        if request.WhichOneof("image") != "content":
            return await self._router.moderate(request, route, deadline, priority)
        content = request.content
        if fit is None:
            try:
                fit = self._planned(request, route, field_name="content", content=content)
            except _Unread:
                return await self._router.moderate(request, route, deadline, priority)
        header, fit_plan, limits = fit.header, fit.plan, route.image_limits
        given = as_given(content, header, fit_plan, limits)
        if given is not None:
            # The request as it came: no copy of its bytes, and no task for a single call.
            answer = await self._router.moderate(request, route, deadline, priority)
            return combined([answer], [given], fit_plan)
        pieces = await self._rendered(content, header, fit_plan, limits, deadline)
        calls = [
            self._router.moderate(_with_content(request, piece.content), route, deadline, priority)
            for piece in pieces
        ]
        answers = await asyncio.gather(*calls)
        return combined(answers, pieces, fit_plan)

    def route_options(self, route: Route) -> FitRoute:
        return self._routes(route)

    async def aclose(self) -> None:
        await self._fetcher.aclose()

    async def _download(self, url: str, route: FitRoute, deadline: Deadline) -> bytes:
        try:
            return await self._fetcher.fetch(url, timeout=deadline.remaining(), headers=route.fetch_headers)
        except BackendError as error:
            raise CallFailure(error, backend="", attempts=0) from None

    def _planned(
        self, request: ModerateImageRequest, route: Route, *, field_name: str, content: bytes
    ) -> Fit:
        """`content`: the request's, read once by the caller."""
        route_cap, limits = self.route_options(route).max_tiles, route.image_limits
        cap = min(request.max_tiles, route_cap) if request.max_tiles > 0 else route_cap
        try:
            header = read_header(content)
        except FitRefused as refused:
            if field_name == "content":
                raise _Unread from None
            raise _invalid(field_name, refused, request) from None
        try:
            fit_plan = plan(header.width, header.height, limits, max_tiles=cap, draft=header.format == "JPEG")
            if as_given(content, header, fit_plan, limits) is None:
                self._check_memory(header, fit_plan)
            return Fit(header, fit_plan)
        except FitRefused as refused:
            raise _invalid(field_name, refused, request) from None

    def _check_memory(self, header: Header, fit_plan: Plan) -> None:
        """Refuses at once an image whose fitting would need more than the whole memory budget."""
        needed = decode_memory(header, fit_plan)
        if needed > self._memory.capacity:
            raise FitRefused(
                "IMAGE_DIMENSIONS_OUT_OF_RANGE",
                f"the image is {header.width}x{header.height} {header.format}; fitting it takes about "
                f"{needed >> 20} MiB, more than the gateway gives one image ({self._memory.capacity >> 20} "
                "MiB): send it as a JPEG, or smaller",
            )

    async def _rendered(
        self, content: bytes, header: Header, fit_plan: Plan, limits: ImageLimits, deadline: Deadline
    ) -> list[Piece]:
        try:
            grant = await self._memory.acquire(
                CALLER.get(), decode_memory(header, fit_plan), timeout=max(0.0, deadline.remaining())
            )
        except NoRoom:
            # Never more than the whole budget (`_check_memory`): the others in flight took it.
            estimate = decode_memory(header, fit_plan) >> 20
            raise CallFailure(
                BackendError(
                    Kind.OVERLOADED,
                    f"fitting the image takes about {estimate} MiB: no room before the deadline",
                ),
                backend="",
                attempts=0,
            ) from None
        try:
            return await asyncio.to_thread(render, content, header, fit_plan, limits)
        except FitRefused as refused:
            raise CallFailure(
                BackendError(Kind.INVALID_REQUEST, str(refused), field="content"), backend="", attempts=0
            ) from None
        finally:
            grant.release()


class _Unread(Exception):
    """Content Pillow cannot read: left to validation and the backend, as before fitting."""


def _invalid(field_name: str, refused: FitRefused, request: ModerateImageRequest) -> ValidationError:
    """The refusal, with whatever else is wrong with the request, as validation lists them."""
    return ValidationError(
        [FieldViolation(field_name, str(refused), refused.reason), *parameter_violations(request)]
    )


def _with_content(request: ModerateImageRequest, content: bytes) -> ModerateImageRequest:
    copy = ModerateImageRequest()
    copy.CopyFrom(request)
    copy.content = content
    return copy
