"""The routing file's `[quotas]` read again when the file changes (checked every few seconds).

A file that no longer validates is reported in one log line and the quotas in force stay.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from service.quotas.config import QuotaBook, load_quotas
from service.routing_file import RoutesError

__all__ = ["QuotaReloader"]

log = logging.getLogger(__name__)

RELOAD_INTERVAL = 2.0


class QuotaReloader:
    def __init__(self, path: Path, apply: Callable[[QuotaBook], None]) -> None:
        self._path = path
        self._apply = apply
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def check(self) -> None:
        """Reads the file again if it changed since it was last read."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        self._seen = stamp
        try:
            book = load_quotas(self._path)
        except RoutesError as error:
            log.error("routing file changed but its quotas are invalid; the previous ones stay: %s", error)
            return
        self._apply(book)
        log.info("routing file changed: quotas reloaded (%d callers)", len(book.by_caller))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            self.check()
