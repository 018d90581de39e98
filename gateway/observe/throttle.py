"""Log lines for things that recur: the first at once, then at most one per interval.

A condition that repeats many times a second (a scanner's malformed requests, a
listener retrying against a Redis that is down) must not flood the log: the
operator needs to learn that it happens, and roughly how often, not each case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class Throttled:
    """One logger call per ``interval`` seconds at most; the calls held back in
    between are counted and the next line that goes out says how many there were."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.held = 0
        self._next = float("-inf")

    def log(self, level: int, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log ``msg % args`` unless a line went out less than ``interval`` ago;
        whether it was logged."""
        now = self.clock()
        if now < self._next:
            self.held += 1
            return False
        if self.held:
            msg += " (and %d more like it in the last %.0f s)"
            args = (*args, self.held, self.interval)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        self.held = 0
        self._next = now + self.interval
        return True

    def reset(self) -> None:
        """The condition is over: the next occurrence is news and logged at once."""
        self.held = 0
        self._next = float("-inf")
