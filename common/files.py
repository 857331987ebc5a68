"""Reading the files the gateway is configured with: regular files only, capped, never blocking.

A path the operator gives (a key file, the routing file, a policy) can be swapped for something that
is not a file: a FIFO blocks `open` until a writer comes (and holds up shutdown with the thread that
waits), `/dev/zero` answers forever. So a file is opened non-blocking, `fstat`ed before any read, and
refused unless it is a regular file no larger than the reader's cap.

Here in `common/`: the service reads its files (routing, policy, tokens, TLS) and the backends theirs
(credentials, policies) through it, and neither imports the layer above it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["KIB", "MIB", "SECRET_FILE_LIMIT", "UnreadableFile", "read_regular_file", "read_text_file"]

KIB = 1024
MIB = 1024 * KIB
# A key, a token, a URL or a credentials profile is at most a few KB: a larger file holds something else.
SECRET_FILE_LIMIT = 64 * KIB

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnreadableFile(ValueError):
    """Why a file could not be read; the message names the problem, never the file's content."""


def read_regular_file(path: Path, limit: int) -> bytes:
    """The whole content of the regular file at `path` (symlinks followed), at most `limit` bytes;
    UnreadableFile otherwise. Never waits for a writer: a FIFO or a device is refused before any read."""
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or type(exc).__name__) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "something else")
            raise UnreadableFile(f"not a regular file but {kind}")
        # Read to one byte past the cap, whatever fstat said: the file may grow while it is read.
        content = bytearray()
        while len(content) <= limit:
            chunk = os.read(descriptor, limit + 1 - len(content))
            if not chunk:
                return bytes(content)
            content += chunk
        raise UnreadableFile(f"larger than {_size(limit)}")
    except OSError as exc:
        raise UnreadableFile(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(descriptor)


def read_text_file(path: Path, limit: int) -> str:
    """`read_regular_file` decoded as UTF-8; UnreadableFile if it is not UTF-8."""
    try:
        return read_regular_file(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile("not UTF-8 text") from None


def _size(limit: int) -> str:
    for unit, name in ((MIB, "MiB"), (KIB, "KiB")):
        if limit >= unit and limit % unit == 0:
            return f"{limit // unit} {name}"
    return f"{limit} bytes"
