"""The Redis client of fleet mode, from the settings: redis:// or rediss:// (TLS, with a CA file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["redis_client"]

# Connecting and each reply are bounded too: the governor's own timeout is the one that matters, but a
# dead peer must not leave a half-open socket waiting for the kernel's minutes-long TCP timeout.
SOCKET_TIMEOUT = 0.5


def redis_client(
    url: str, *, password: str | None = None, ca_file: Path | None = None, max_connections: int | None = None
) -> redis.Redis:
    """A client that never retries by itself: the governor decides what a failed call means. With
    `max_connections`, a call waits for one of that many connections instead of failing past them."""
    options: dict[str, Any] = {
        "password": password or None,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        # No CLIENT SETINFO on connect: two more round trips before a far Redis's first answer.
        "driver_info": None,
    }
    # Only a TLS connection takes a CA (settings refuse one without rediss://).
    if ca_file is not None:
        options["ssl_ca_certs"] = str(ca_file)
    if max_connections is None:
        return redis.Redis.from_url(url, **options)
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None, **options
    )
    return redis.Redis.from_pool(pool)
