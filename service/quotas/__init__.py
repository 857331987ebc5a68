"""Quota packages per caller: billed calls per calendar day or month, hard or soft, kept exactly across
the fleet through Redis (per process without it). See docs/guides/quotas.md."""
