"""What the tests allow the budget's learned margin while it learns."""

from __future__ import annotations

__all__ = ["within_the_learning_allowance"]


def within_the_learning_allowance(rate_limited: int, requests: int, *, budgets: int = 1) -> bool:
    """The learned margin (service/governor/pacing.py) shrinks until the path's jitter, or the noise of a
    loaded machine, draws a RequestLimitExceeded, then keeps above it: about one per start of a budget,
    retried and never lost. At most two for each of the `budgets` learning on their own (replicas on
    their fallback shares), or the 0.1 % of calls issue 22 allows on a long run."""
    return rate_limited <= max(2 * budgets, requests // 1000)
