"""HTTP limits: what one client can cost the others.

* :func:`scrape_timeout` -- a client's ``X-Prometheus-Scrape-Timeout-Seconds``
  header, taken only when it is a sane number;
* :func:`may_share` -- whether a request may join a collection already in
  flight without getting a worse result or waiting past its own deadline;
* :class:`RequestLimit` -- ``--web.max-requests``;
* :class:`RateLimitedLog` -- one short line per interval for events a
  client can cause at will (bad requests).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable, Optional

#: A header value above this is taken as this (seconds). Prometheus never
#: sends more than the scrape interval; the server also clamps to its
#: per-request time limit.
MAX_SCRAPE_TIMEOUT = 600.0


def scrape_timeout(raw: Optional[str], default: float, ceiling: float) -> float:
    """Seconds a client asks for in *raw* (a header value): a finite number
    > 0, at most *ceiling* (and MAX_SCRAPE_TIMEOUT); anything else (missing,
    not a number, NaN, infinite, <= 0) is *default*."""
    if not raw or len(raw) > 64:
        return default
    try:
        v = float(raw)
    except ValueError:
        return default
    if not math.isfinite(v) or v <= 0:
        return default
    return min(v, ceiling, MAX_SCRAPE_TIMEOUT)


def may_share(inflight_ends: float, own_ends: float, own_deadline: float) -> bool:
    """Whether a request whose collection would end at *own_ends* (loop
    time; *own_deadline* seconds from now) may join a collection in flight
    that ends at *inflight_ends*: only if that one ends no later (the
    request never waits past its own deadline) and not much earlier (it
    gives slow namespaces nearly as long as the request's own collection
    would: within a tenth of the deadline, at most 1 s)."""
    tolerance = min(1.0, own_deadline / 10)
    return own_ends - tolerance <= inflight_ends <= own_ends


class RequestLimit:
    """At most *limit* requests at once (0 = no limit). Event loop only."""

    def __init__(self, limit: int):
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self.active = 0

    def acquire(self) -> bool:
        if self.limit and self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


class RateLimitedLog:
    """Log through *logger* at most one line per *interval* seconds; a line
    says how many were left out since the last one. Callers pass only
    short, fixed text and values they made (never a client's bytes).
    Thread-safe."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next = float("-inf")
        self.suppressed = 0

    def log(self, level: int, msg: str, *args) -> bool:
        """Log now or count; True if a line was written."""
        if not self._logger.isEnabledFor(level):
            return False
        with self._lock:
            now = self._clock()
            if now < self._next:
                self.suppressed += 1
                return False
            left_out, self.suppressed = self.suppressed, 0
            self._next = now + self.interval
        if left_out:
            msg += " (and %d more since the last such line)"
            args += (left_out,)
        self._logger.log(level, msg, *args)
        return True
