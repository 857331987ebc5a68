"""What the gateway knows about the call in progress, for backends that share work between callers.

A neutral module: the service sets these (backends never import service/), and in-process backends read
them to keep one caller's flood from starving another.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["CALLER"]

# The authenticated caller's name; "" when authentication is off.
CALLER: ContextVar[str] = ContextVar("moderation_caller", default="")
