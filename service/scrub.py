"""The gateway's outward scrubber: the configured secrets (`Settings.secrets`) out of everything it shows.

Answers (status messages, `BadRequest` descriptions, `ErrorInfo` metadata), span attributes, metric
labels and log lines all pass through `outward()` where they are built. The secrets are configured
once per process, with the logging (`service.logs.configure_logging`); until then it removes nothing.
Backends scrub their own credentials at their boundary too (`backends.scrub`): this is the second net.
"""

from __future__ import annotations

from collections.abc import Iterable

from backends.scrub import Scrubber

__all__ = ["configure", "outward"]

_outward = Scrubber()


def configure(secrets: Iterable[str]) -> Scrubber:
    """Sets the process's secrets (replacing any set before) and returns the scrubber for them."""
    global _outward
    _outward = Scrubber(secrets)
    return _outward


def outward() -> Scrubber:
    return _outward
