"""Downloading `FileUrl` as IMS does: http(s) only, a timeout per attempt, one retry, a size cap.

Unlike IMS the emulator never reaches the internet: only the configured (loopback) hosts are
contacted, redirects are not followed (IMS documents that 302s may fail, and following one could
leave the allowed hosts) and proxy settings from the environment are ignored.
"""

from __future__ import annotations

import http.client
import time
import urllib.request
from collections.abc import Set
from typing import Any
from urllib.parse import urlsplit

from .errors import ImsError

MAX_SOURCE_BYTES = 30 * 1024 * 1024
ATTEMPTS = 2
_CHUNK = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class _TooLarge(Exception):
    pass


def _download_error(reason: str) -> ImsError:
    return ImsError("ResourceUnavailable.ImageDownloadError", f"Failed to download the image: {reason}")


def _fetch_once(url: str, timeout: float) -> bytes:
    # The socket timeout bounds each read; the deadline bounds the whole transfer, as IMS's does.
    deadline = time.monotonic() + timeout
    with _OPENER.open(url, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"HTTP status {response.status}")
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > MAX_SOURCE_BYTES:
                raise _TooLarge
            if time.monotonic() > deadline:
                raise TimeoutError(f"the download took longer than {timeout} s")
            chunks.append(chunk)
    return b"".join(chunks)


def download(url: str, *, allowed_hosts: Set[str], timeout: float) -> bytes:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise _download_error("the URL is malformed") from None
    if parts.scheme not in ("http", "https") or not host:
        raise _download_error("FileUrl must be an http or https URL")
    if host not in allowed_hosts:
        raise _download_error(
            f"host {host} is unreachable (the emulator downloads only from {sorted(allowed_hosts)})"
        )
    failure = ""
    for _ in range(ATTEMPTS):
        try:
            return _fetch_once(url, timeout)
        except _TooLarge:
            raise _download_error(f"the image is larger than {MAX_SOURCE_BYTES} bytes") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
    raise _download_error(f"{ATTEMPTS} attempts failed, the last with {failure}")
