"""Hot reload: the policy's files are polled, and re-read when any of them changes.

A change is seen through the file's identity and size as `stat` follows symlinks, and the path it
resolves to, so an in-place edit, an atomic rename and a Kubernetes ConfigMap's `..data` symlink swap
are all seen. The new files are validated whole (off the event loop) before use; a bad one keeps the
previous policy, writes one log line and sets `moderation_policy_reload_failed` until a good one loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from service.policy.gate import PolicyGate
from service.policy.loading import PolicyError, PolicySource

__all__ = ["POLL_INTERVAL", "PolicyWatcher"]

log = logging.getLogger(__name__)

# Seconds between looks at the files: a change is in use within about this, well inside the 5 s a
# fleet's replicas have to follow it.
POLL_INTERVAL = 1.0
Signature = tuple[tuple[str, int, int, int, int], ...]


def signature(paths: Iterable[Path]) -> Signature:
    """What changes when any of `paths` does: where each resolves, its inode, size and mtime."""
    marks = []
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:
            marks.append((str(path), -1, -1, -1, -1))
            continue
        marks.append(
            (os.path.realpath(path), status.st_ino, status.st_dev, status.st_size, status.st_mtime_ns)
        )
    return tuple(marks)


class PolicyWatcher:
    def __init__(self, source: PolicySource, gate: PolicyGate, *, interval: float = POLL_INTERVAL) -> None:
        self._source = source
        self._gate = gate
        self._interval = interval
        self._seen = signature(gate.policy.files)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def check(self) -> None:
        """Loads the files if any changed since last seen."""
        files = self._gate.policy.files
        seen = signature(files)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            policy = await asyncio.to_thread(self._source.load)
        except PolicyError as exc:
            self._rejected("; ".join(exc.problems))
            return
        except Exception as exc:
            # Whatever goes wrong, the watcher keeps watching and the previous policy keeps answering.
            self._rejected(f"unexpected {type(exc).__name__}: {exc}")
            return
        self._gate.metrics.reload_failed = False
        # The files the new policy names are watched from now on.
        self._seen = signature(policy.files)
        if policy.version != self._gate.policy.version:
            log.info("policy reloaded: version %s (was %s)", policy.version, self._gate.policy.version)
        self._gate.policy = policy

    def _rejected(self, why: str) -> None:
        self._gate.metrics.reload_failed = True
        log.error("policy not reloaded, keeping version %s: %s", self._gate.policy.version, why)
