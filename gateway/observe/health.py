"""Readiness: what each dependency says, and whether this process should get traffic.

Only draining (shutting down) makes the process unready. A Redis or origin
outage is reported as ``degraded`` but stays ready: every replica shares those
dependencies, so failing readiness on them would pull every replica out of the
load balancer at once, while they can still serve cached (and stale) bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Check = Callable[[], Awaitable[bool]]


class Health:
    def __init__(self, checks: dict[str, Check], timeout: float = 1.0) -> None:
        self.checks = checks
        self.timeout = timeout
        self.draining = False
        self.last: dict[str, bool] = {}

    async def _run(self, check: Check) -> bool:
        try:
            return await asyncio.wait_for(check(), self.timeout)
        except Exception:  # a check that raises has failed; say so, don't 500
            return False

    async def check(self) -> dict[str, Any]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        self.last = dict(zip(names, results, strict=True))
        status = "draining" if self.draining else "ok" if all(results) else "degraded"
        return {"status": status,
                "checks": {n: ("ok" if r else "failing") for n, r in self.last.items()}}
