"""A Python client for the moderation gateway, in async (grpc.aio) and blocking forms.

Message limits fit IMS-size images, every call has a deadline, and only what the gateway marks
retryable is retried: RATE_BUDGET_EXHAUSTED (nothing was sent upstream) and SERVER_DRAINING (a stream
ended by a shutdown, resent with the items it left unanswered), each wait honouring RetryInfo.
"""

from moderation_client.aio import ModerationClient
from moderation_client.base import DEFAULT_TIMEOUT, MAX_MESSAGE_BYTES
from moderation_client.errors import RETRYABLE_REASONS, ModerationError, ServerUnreachable
from moderation_client.retry import RetryPolicy
from moderation_client.stream import StreamItem, StreamResult
from moderation_client.sync import SyncModerationClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "RETRYABLE_REASONS",
    "ModerationClient",
    "ModerationError",
    "RetryPolicy",
    "ServerUnreachable",
    "StreamItem",
    "StreamResult",
    "SyncModerationClient",
]
