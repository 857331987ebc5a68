"""Asynchronous moderation: tasks submitted now, moderated on idle budget, answered by signed callback
and kept for `GetModerationTask` (issue 28)."""
