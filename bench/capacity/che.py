"""Che's approximation of an LRU bounded by bytes, and the TTL-cache formulas.

Requests for object i arrive as a Poisson process of rate ``rates[i]``
(the independent reference model); purges of it as another of rate ``purge``
(per object). An LRU keeps an object while it was requested within the
characteristic time T and not purged since, so

    P(present) = r / (r + p) * (1 - exp(-(r + p) * T))

(the time since the last request is Exp(r); no purge within it: exp(-p x)).
T is the one value at which the expected bytes present equal the capacity.
Che et al. (2002) for equal sizes; for different sizes the same fixed point
with bytes (Fricker, Robert, Roberts 2012 show it is accurate for large
caches). By PASTA the probability seen by a request equals the time average.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def present(rates: Floats, t: float, purge: float = 0.0) -> Floats:
    """P(an object is in an LRU of characteristic time ``t``) at each request."""
    total = rates + purge
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, rates / np.where(total > 0, total, 1.0), 0.0)
    if math.isinf(t):
        out: Floats = share
        return out
    out = share * -np.expm1(-total * t)
    return out


def characteristic_time(rates: Floats, sizes: Floats, capacity: float,
                        purge: float = 0.0) -> float:
    """T with sum(sizes * present(rates, T)) = capacity; inf when all of it fits."""
    if capacity <= 0:
        return 0.0
    live = rates > 0  # objects never asked for take no room
    total = rates[live] + purge
    weight = sizes[live] * (rates[live] / total)  # bytes held once T is infinite
    if float(weight.sum()) <= capacity:
        return math.inf

    def held(t: float) -> float:
        return float(np.dot(weight, -np.expm1(-total * t)))

    lo, hi = 0.0, 1.0
    while held(hi) < capacity:
        lo, hi = hi, hi * 4
    for _ in range(64):  # bisection: the bytes held grow with T
        mid = (lo + hi) / 2
        if held(mid) < capacity:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-7 * hi:  # T to 0.00001 %: far below the model's own error
            break
    return (lo + hi) / 2


def ttl_hits(rates: Floats, ttl: float) -> Floats:
    """Share of an object's requests a TTL cache answers (the copy is kept ``ttl``
    from the miss that fetched it, hits do not extend it): r*ttl / (1 + r*ttl)."""
    x = rates * ttl
    out: Floats = x / (1.0 + x)
    return out


def ttl_for_hit_ratio(rates: Floats, target: float, weights: Floats | None = None) -> float:
    """The TTL at which a TTL cache in front answers ``target`` of all requests
    (how the model places a CDN given only its hit ratio: popular objects first).
    ``weights``: objects each rate stands for (a sampled set)."""
    weighted = rates if weights is None else rates * weights
    total = float(weighted.sum())
    if target <= 0 or total <= 0:
        return 0.0
    if target >= 1:
        return math.inf

    def ratio(ttl: float) -> float:
        return float(np.dot(weighted, ttl_hits(rates, ttl))) / total

    lo, hi = 0.0, 1.0
    while ratio(hi) < target:
        lo, hi = hi, hi * 4
        if hi > 1e15:
            return math.inf
    for _ in range(64):
        mid = (lo + hi) / 2
        if ratio(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
