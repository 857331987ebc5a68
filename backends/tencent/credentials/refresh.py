"""Credentials kept fresh in the background, never on a request's path.

`RefreshingCredentials` holds the credentials requests are signed with. A task, started and stopped
with the backend, loads them again when the source changes (a key file rewritten) and ahead of their
expiry (temporary credentials); a request only ever reads what is held. Each load has an overall
deadline, and one that misses it is a failed refresh like any other. A failed refresh keeps the
credentials held, still valid or not, and is tried again with capped exponential backoff. Each
rotation and each failure is one log line and one count, by backend and source; neither shows a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Hashable

from opentelemetry import metrics

from backends.tencent.credentials.model import CredentialError, Credentials, Source

__all__ = ["CredentialMetrics", "RefreshingCredentials"]

log = logging.getLogger(__name__)

# How often a watched source (a file) is checked for a change: a stat, so cheap.
POLL_SECONDS = 1.0
# Temporary credentials are refreshed this long before they expire (the SDK's 300 s), or a third of
# their lifetime when that is shorter.
REFRESH_AHEAD_SECONDS = 300.0
# Backoff after a failed refresh: 1 s doubling, capped; full jitter on the upper half.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
BACKOFF_FLOOR_SECONDS = 0.5
# Every load of a source, whole: httpx's timeout bounds each read, so an endpoint trickling a byte a
# second would otherwise hold a refresh (and with it every later one) forever. Under START_TIMEOUT_SECONDS,
# so a stalled first load is logged and counted before start-up goes on without credentials.
LOAD_DEADLINE_SECONDS = 6.0
# How long `start` waits for the first credentials before serving without them (calls then fail as
# misconfigured until the background task gets some).
START_TIMEOUT_SECONDS = 10.0
# A refused key makes every call in flight ask for a re-read at once: one re-read serves them all.
RELOAD_INTERVAL_SECONDS = 1.0


class CredentialMetrics:
    """Counts of rotations and of failed refreshes, by backend and source."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.rotations = meter.create_counter(
            "moderation.credentials.rotations",
            unit="{rotation}",
            description="Credentials replaced by newer ones, by backend and credential source",
        )
        self.failures = meter.create_counter(
            "moderation.credentials.failures",
            unit="{failure}",
            description="Failed credential loads (the credentials held are kept), by backend and source",
        )


class RefreshingCredentials:
    """A `CredentialProvider` over one `Source`, refreshed by a task of its own."""

    def __init__(
        self,
        source: Source,
        *,
        backend: str,
        meter: metrics.Meter | None = None,
        initial: Credentials | None = None,
        clock: Callable[[], float] = time.time,
        on_new: Callable[[Credentials], None] | None = None,
    ) -> None:
        """`initial`: credentials already read (at start-up validation) from the source as it is now.
        `on_new` is told of every credentials loaded after those, before any request is signed with them
        (so that scrubbers learn the new secrets)."""
        self._source = source
        self._backend = backend
        self._metrics = CredentialMetrics(meter or metrics.NoOpMeter("moderation-gateway"))
        self._attributes = {"moderation.backend": backend, "moderation.credential_source": source.name}
        self._clock = clock
        self._on_new = on_new
        self._current = initial
        self._version: Hashable = source.version() if initial is not None else None
        # When the held credentials are next renewed; None: only when the source changes.
        self._renew_at = self._first_renewal(initial) if initial is not None else None
        self._failures = 0
        self._retry_in = 0.0
        self._last_problem = "not loaded yet"
        self._last_reload = -RELOAD_INTERVAL_SECONDS
        self._reload_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def source(self) -> str:
        return self._source.name

    def current(self) -> Credentials:
        if self._current is None:
            raise CredentialError(f"no credentials from the {self.source} source yet: {self._last_problem}")
        return self._current

    async def start(self) -> None:
        """Loads the first credentials (if none were given) and starts the refresh task."""
        if self._current is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_TIMEOUT_SECONDS):
                    await self._first_load()
        self._task = asyncio.create_task(self._run(), name=f"credentials-{self._backend}")

    async def _first_load(self) -> None:
        while True:
            if await self._refresh():
                return
            await asyncio.sleep(self._retry_in)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._source.aclose()

    async def reload(self, refused: Credentials) -> Credentials | None:
        """After `refused` was turned down: newer credentials to retry with, or None.

        Credentials rotated since the call was signed are returned at once; otherwise the source is
        read again, at most once per RELOAD_INTERVAL_SECONDS however many calls ask.
        """
        async with self._reload_lock:
            if self._current is not None and self._current != refused:
                return self._current
            if self._clock() - self._last_reload < RELOAD_INTERVAL_SECONDS:
                return None
            self._last_reload = self._clock()
            await self._refresh(reason="a refused key")
            return self._current if self._current is not None and self._current != refused else None

    # --- the task --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._next_check())
            if not self._due():
                continue
            try:
                await self._refresh()
            except Exception:
                # A bug in a source must not end refreshing for the life of the process.
                log.exception("refreshing the credentials of backend %s failed unexpectedly", self._backend)
                self._failed("an unexpected error (logged above)")

    def _next_check(self) -> float:
        if self._failures:
            return self._retry_in
        wait = POLL_SECONDS if self._renew_at is None else min(POLL_SECONDS, self._renew_at - self._clock())
        return max(wait, 0.0)

    def _first_renewal(self, credentials: Credentials) -> float | None:
        """Ahead of expiry by REFRESH_AHEAD_SECONDS, or a third of the lifetime left when shorter."""
        if credentials.expires_at is None:
            return None
        ahead = min(REFRESH_AHEAD_SECONDS, (credentials.expires_at - self._clock()) / 3)
        return credentials.expires_at - ahead

    def _renewal_again(self, credentials: Credentials) -> float | None:
        """The source answered the credentials held once more: ask again after a third of the time they
        have left (at least BACKOFF_FLOOR_SECONDS), never in a busy loop."""
        if credentials.expires_at is None:
            return None
        left = credentials.expires_at - self._clock()
        return self._clock() + max(left / 3, BACKOFF_FLOOR_SECONDS)

    def _due(self) -> bool:
        if self._current is None or self._failures:
            return True
        if self._renew_at is not None and self._clock() >= self._renew_at:
            return True
        return self._source.version() != self._version

    def _backoff(self) -> float:
        """Capped exponential, and capped by half the time the credentials held have left, so that a
        source that recovers before they expire is tried again before they do."""
        ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(self._failures - 1, 0))
        held = self._current
        if held is not None and held.expires_at is not None:
            ceiling = min(ceiling, max((held.expires_at - self._clock()) / 2, BACKOFF_FLOOR_SECONDS))
        return random.uniform(ceiling / 2, ceiling)

    async def _refresh(self, reason: str = "") -> bool:
        """Load once; True if the source answered (whether or not its credentials were new)."""
        version = self._source.version()
        try:
            async with asyncio.timeout(LOAD_DEADLINE_SECONDS):
                loaded = await self._source.load()
        except CredentialError as problem:
            self._failed(str(problem))
            return False
        except TimeoutError:
            self._failed(f"no credentials within {LOAD_DEADLINE_SECONDS:.0f} s (the source stalled)")
            return False
        self._failures = 0
        self._version = version
        if loaded == self._current:
            self._renew_at = self._renewal_again(loaded)
        else:
            first = self._current is None
            if self._on_new is not None:
                self._on_new(loaded)
            self._current = loaded
            self._renew_at = self._first_renewal(loaded)
            self._metrics.rotations.add(1, self._attributes)
            log.info(
                "credentials of backend %s %s from the %s source%s; %s",
                self._backend,
                "loaded" if first else "rotated",
                self._source.name,
                f" after {reason}" if reason else "",
                self._validity(loaded),
            )
        return True

    def _failed(self, problem: str) -> None:
        self._failures += 1
        self._retry_in = self._backoff()
        self._last_problem = problem
        self._metrics.failures.add(1, self._attributes)
        held = (
            "no credentials held"
            if self._current is None
            else f"keeping those held ({self._validity(self._current)})"
        )
        log.warning(
            "refreshing the credentials of backend %s from the %s source failed: %s; %s; "
            "next try within %.1f s",
            self._backend,
            self._source.name,
            problem,
            held,
            self._retry_in,
        )

    def _validity(self, credentials: Credentials) -> str:
        if credentials.expires_at is None:
            return "they do not expire"
        left = credentials.expires_at - self._clock()
        return f"valid for {left:.0f} s more" if left > 0 else f"expired {-left:.0f} s ago"
