"""A worker's budget of cold lookups: how often an unknown code may cost Postgres.

A code in neither the worker's cache nor Redis is looked up in Postgres only with a token from a
bucket that holds at most ``rate`` tokens and refills ``rate`` a second (``COLD_LOOKUPS_PER_SECOND``,
read from the worker's ``Clock``). A lookup that finds the link gives its token back, so only
unknown codes spend the budget: a flood of random codes costs Postgres at most ``rate`` lookups a
second per worker, after a first second's worth, while links that exist (a Redis emptied by a
restart, say) are read as fast as they come, unless they arrive during such a flood and find the
bucket empty.
"""

from __future__ import annotations

from edge.cache import Clock


class ColdBudget:
    """Tokens for Postgres lookups of codes the worker and Redis do not know."""

    __slots__ = ("_at", "_tokens", "clock", "rate")

    def __init__(self, rate: int, clock: Clock) -> None:
        self.rate = float(rate)
        self.clock = clock
        self._tokens = self.rate
        self._at = clock.now

    def take(self) -> bool:
        """One token, if there is one."""
        now = self.clock.now
        if now > self._at:
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
            self._at = now
        if self._tokens < 1.0 - 1e-9:  # a whole token, give or take the clock's float rounding
            return False
        self._tokens -= 1.0
        return True

    def give_back(self) -> None:
        """Return a token a lookup did not need to spend (the code exists)."""
        self._tokens = min(self.rate, self._tokens + 1.0)
