"""The objects and their popularity: sizes, request probabilities, names, traces."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Workload:
    """``probs[i]`` of the requests ask for object i, of ``sizes[i]`` bytes, at ``uris[i]``."""

    sizes: Floats
    probs: Floats
    uris: Sequence[str]
    weights: Floats | None = None  # objects each one stands for (a sample); None: 1 each

    def __post_init__(self) -> None:
        if not (len(self.sizes) == len(self.probs) == len(self.uris)):
            raise ValueError("sizes, probs and uris must have one entry per object")

    @property
    def weight(self) -> Floats:
        return np.ones(len(self.sizes)) if self.weights is None else self.weights

    @property
    def objects(self) -> int:
        """Objects in the whole set (more than modelled when sampled)."""
        return round(float(self.weight.sum()))

    @property
    def modelled(self) -> int:
        return len(self.sizes)

    @property
    def total_bytes(self) -> float:
        return float(np.dot(self.sizes, self.weight))


def zipf_probs(n: int, s: float) -> Floats:
    """P(rank r) proportional to r^-s, r = 1..n (s = 0: uniform)."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -s
    out: Floats = weights / weights.sum()
    return out


def lognormal_sizes(n: int, median: float, sigma: float, lo: float, hi: float,
                    seed: int) -> Floats:
    """Sizes drawn from a log-normal (``median`` bytes, ``sigma`` of ln), clipped."""
    rng = np.random.default_rng(seed)
    out: Floats = np.clip(np.exp(rng.normal(np.log(median), sigma, n)), lo, hi).round()
    return out


class SyntheticUris(Sequence[str]):
    """/images/obj-0000000.jpg ... made when asked for: 10^7 of them as a list would
    take gigabytes."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return f"/images/obj-{i % self.n:08d}.jpg"

    def __iter__(self) -> Iterator[str]:
        return (f"/images/obj-{i:08d}.jpg" for i in range(self.n))


def default_uris(n: int) -> Sequence[str]:
    return SyntheticUris(n)


def synthetic(n: int, zipf_s: float, *, median: float, sigma: float, lo: float, hi: float,
              seed: int) -> Workload:
    """n objects; popularity rank is a seeded shuffle, so rank and size are independent."""
    probs = np.empty(n)
    rng = np.random.default_rng(seed + 1)
    probs[rng.permutation(n)] = zipf_probs(n, zipf_s)
    return Workload(lognormal_sizes(n, median, sigma, lo, hi, seed), probs, default_uris(n))


def sampled_synthetic(n: int, zipf_s: float, head: int, tail: int, *, median: float,
                      sigma: float, lo: float, hi: float, seed: int) -> Workload:
    """``synthetic(n, ...)`` for sets too big to hold per object (5 * 10^7 avatars):
    the ``head`` most popular objects all, and a uniform random sample of about
    ``tail`` of the others, each standing for 1/fraction objects (its weight).
    Every sum of the model (bytes held, requests, fetches) is then an unbiased
    estimate of the whole set's; the head is kept whole because a Zipf's first
    objects carry much of the traffic and sampling them would swing the result."""
    rng = np.random.default_rng(seed + 2)
    head = min(head, n)
    fraction = min(1.0, tail / (n - head)) if n > head else 1.0
    harmonic = 0.0
    ranks_kept = []
    chunk = 10_000_000
    for start in range(1, n + 1, chunk):  # in chunks: n floats at once is GBs
        ranks = np.arange(start, min(n, start + chunk - 1) + 1, dtype=np.float64)
        harmonic += float((ranks**-zipf_s).sum())
        keep = (ranks <= head) | (rng.random(len(ranks)) < fraction)
        ranks_kept.append(ranks[keep])
    kept = np.concatenate(ranks_kept)
    probs: Floats = kept**-zipf_s / harmonic
    weights = np.where(kept <= head, 1.0, 1.0 / fraction)
    m = len(kept)
    return Workload(lognormal_sizes(m, median, sigma, lo, hi, seed), probs, default_uris(m),
                    weights)


def sample_trace(probs: Floats, length: int, seed: int) -> Ints:
    """``length`` object ids drawn independently from ``probs`` (the IRM)."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(probs)
    cdf /= cdf[-1]
    out: Ints = np.searchsorted(cdf, rng.random(length), side="right").astype(np.int64)
    return out


def read_trace(path: Path, uris: list[str] | None = None) -> tuple[Ints, list[str]]:
    """A trace file: one id (or path) per line. Returns (ids, uris of the ids);
    ids number the distinct lines in order of first appearance, unless ``uris``
    names the objects already (lines not in it are an error)."""
    index: dict[str, int] = {u: i for i, u in enumerate(uris)} if uris is not None else {}
    names = list(uris) if uris is not None else []
    ids = []
    with path.open() as f:
        for line in f:
            name = line.strip()
            if not name:
                continue
            if not name.startswith("/"):
                name = "/images/" + name
            i = index.get(name)
            if i is None:
                if uris is not None:
                    raise ValueError(f"{path}: {name!r} is not one of the objects")
                i = index[name] = len(names)
                names.append(name)
            ids.append(i)
    return np.array(ids, dtype=np.int64), names


def from_trace(ids: Ints, sizes: Floats, uris: Sequence[str]) -> Workload:
    """The workload a trace describes: each object's share of its requests."""
    counts = np.bincount(ids, minlength=len(uris)).astype(np.float64)
    return Workload(sizes, counts / counts.sum(), uris)
