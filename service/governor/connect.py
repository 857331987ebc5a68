"""The Redis client of fleet mode, from the settings: redis:// or rediss:// (TLS, with a CA file)."""

from __future__ import annotations

import functools
from pathlib import Path

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["redis_client"]

# Connecting and each reply are bounded too: the governor's own timeout is the one that matters, but a
# dead peer must not leave a half-open socket waiting for the kernel's minutes-long TCP timeout.
SOCKET_TIMEOUT = 0.5


def redis_client(url: str, *, password: str | None = None, ca_file: Path | None = None) -> redis.Redis:
    """A client that never retries by itself: the governor decides what a failed call means."""
    connect = functools.partial(
        redis.Redis.from_url,
        url,
        password=password or None,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        # No CLIENT SETINFO on connect: two more round trips before a far Redis's first answer.
        driver_info=None,
    )
    # Only a TLS connection takes a CA (settings refuse one without rediss://).
    return connect(ssl_ca_certs=str(ca_file)) if ca_file is not None else connect()
