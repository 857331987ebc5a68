"""The gateway's outward scrubber: the configured secrets (`Settings.secrets`) out of everything it shows.

Answers (status messages, `BadRequest` descriptions, `ErrorInfo` metadata), span attributes, metric
labels and log lines all pass through `outward()` where they are built. The secrets are added by
`build_server()` and by `service.logs.configure_logging`; until then it removes nothing.
Backends scrub their own credentials at their boundary too (`backends.scrub`): this is the second net.
"""

from __future__ import annotations

from collections.abc import Iterable

from backends.scrub import Scrubber

__all__ = ["configure", "outward"]

_outward = Scrubber()


def configure(secrets: Iterable[str]) -> Scrubber:
    """Adds secrets to the process's scrubber and returns it. Secrets only accumulate: every gateway
    built in this process (tests build several) keeps its own out of what any of them shows, and the
    one scrubber grows with the keys backends rotate in (`BuildContext.scrubber`)."""
    _outward.add(secrets)
    return _outward


def outward() -> Scrubber:
    return _outward
