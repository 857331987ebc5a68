"""Reading an image file for the CLI: a regular file only, capped, never blocking.

A folder may hold a FIFO or a device under an image's name: a FIFO blocks `open` until a writer comes,
and `/dev/zero` answers forever. So a file is opened non-blocking, `fstat`ed before any read, and refused
unless it is a regular file no larger than the largest message the client sends. (The gateway has its
own reader: the client ships alone and imports nothing of it.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from moderation_client.base import MAX_MESSAGE_BYTES

__all__ = ["read_image"]

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def read_image(path: Path, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """The bytes of the regular file at `path`; OSError (with a reason to print) otherwise."""
    descriptor = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{path}: not a regular file")
        content = bytearray()
        # One byte past the cap, whatever fstat said: the file may grow while it is read.
        while len(content) <= limit:
            chunk = os.read(descriptor, limit + 1 - len(content))
            if not chunk:
                return bytes(content)
            content += chunk
        raise OSError(f"{path}: larger than the {limit // (1024 * 1024)} MiB a message may carry")
    finally:
        os.close(descriptor)
