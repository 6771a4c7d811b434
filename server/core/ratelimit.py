"""Per-connection rate limits: token buckets with an injectable clock (sans-I/O, no timers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from server.core.protocol_types import LIMITS

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"bad token bucket rate={rate} burst={burst}")
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._tokens = float(burst)
        self._at = clock()

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self, n: float = 1.0) -> bool:
        """Spend n tokens if there are enough; return whether it did."""
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


@dataclass(frozen=True)
class RateBudgets:
    """Rates (per second) and bursts of one connection's buckets; defaults from the protocol spec."""

    edit_rate: float = LIMITS["edit_rate_per_s"]  # versioned ops and set_name
    edit_burst: float = LIMITS["edit_burst"]
    cursor_rate: float = LIMITS["cursor_rate_per_s"]  # cursor messages (over budget: dropped)
    cursor_burst: float = LIMITS["cursor_burst"]
    control_rate: float = LIMITS["control_rate_per_s"]  # ack and ping (over budget: dropped)
    control_burst: float = LIMITS["control_burst"]
    strike_rate: float = LIMITS["strike_rate_per_s"]  # refusals tolerated ...
    strike_burst: float = LIMITS["strike_burst"]  # ... before the connection is closed


class ConnectionLimiter:
    """The buckets of one connection: ``allow(rate_class)`` per message, ``strike()`` per refusal.

    Rate classes are the spec's: "edit", "cursor", "control". ``strike()`` returns False once the
    strike budget is spent: close the connection then.
    """

    def __init__(self, budgets: RateBudgets | None = None, clock: Clock = time.monotonic) -> None:
        b = budgets or RateBudgets()
        self.buckets = {
            "edit": TokenBucket(b.edit_rate, b.edit_burst, clock),
            "cursor": TokenBucket(b.cursor_rate, b.cursor_burst, clock),
            "control": TokenBucket(b.control_rate, b.control_burst, clock),
        }
        self.strikes = TokenBucket(b.strike_rate, b.strike_burst, clock)
        self.refused = 0  # messages refused or dropped for rate, for logs and stats

    def allow(self, rate_class: str | None) -> bool:
        if rate_class is None:
            return True
        ok = self.buckets[rate_class].take()
        if not ok:
            self.refused += 1
        return ok

    def strike(self) -> bool:
        """Count one refusal; False when the connection has used up its strikes."""
        return self.strikes.take()
