"""What the soak knows the gateway may answer: every version of every object ever
stored, the fallback picture, purges, aliases, and the variants derived from them.

The soak checks every answer against this model (bench/soak_traffic.py). Each
stored object is identified by the gateway's own ETag rule (``etag_for(sha256)``,
gateway/model.py), so a 200 body, a HEAD's ETag and a 304's ETag are checked
the same way. Variant bytes are recomputed here with the gateway's own
``gateway.variants.transform.render`` (deterministic for a given Pillow build), so a
variant answer is checked byte for byte too.

Verdicts for an image answer (200 body, HEAD or 304 ETag):

``ok``                the current version (or the fallback for a missing id)
``outdated:stale``    an older version, answered ``X-Cache: STALE`` while the
                      origin failed (allowed: stale-if-error)
``outdated:in-ttl``   an older version, within ``disk.ttl`` + slack of the
                      re-upload and no propagated purge in between (allowed: the
                      gateway only learns of S3 changes on revalidation)
``outdated:after-purge``  an older version although a purge that said
                      ``propagated: true`` had completed before the request
                      started (breaks a rule of the soak)
``outdated:beyond-ttl``   an older version later than ``disk.ttl`` + slack after
                      the re-upload, not STALE (breaks a rule of the soak)
``wrong:...``         bytes never stored for that id, or the fallback for an
                      existing object: the figure that must be 0
``None``              no match yet: re-checked at the end, after every upload
                      was read back from S3 (an upload through the gateway
                      stores bytes the soak learns only afterwards)
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.model import etag_for
from gateway.variants.transform import Geometry, Output, render

MAX_PIXELS = 25_000_000
FALLBACK_PATH = Path(__file__).resolve().parents[1] / "gateway" / "assets" / "default_pfp.png"


def etag_of(data: bytes) -> str:
    return etag_for(hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Spec:
    """One variant the soak asks for: its query string and how to render it locally."""

    query: str
    width: int | None
    height: int | None
    fit: str
    fmt: str
    quality: int

    def render(self, data: bytes) -> bytes:
        return render(data, Geometry(self.width, self.height, self.fit, False),
                      Output(self.fmt, self.quality), MAX_PIXELS).body


SPECS = (
    Spec("w=64&h=64&format=webp", 64, 64, "cover", "webp", 80),
    Spec("w=32&format=jpeg&q=70", 32, None, "cover", "jpeg", 70),
    Spec("w=128&h=96&fit=contain&format=png", 128, 96, "contain", "png", 80),
)


@dataclass
class Version:
    data: bytes
    etag: str
    since: float                 # monotonic: when it may first have been served
    until: float | None = None   # when a newer version replaced it in S3
    source: str = "seed"         # seed | s3-put | gateway-upload | readback

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Purge:
    done: float                  # monotonic: when the DELETE (or upload) answered
    propagated: bool
    version: int | None = None   # the version the gateway answered


@dataclass
class Model:
    ttl: float                   # disk.ttl of the gateway
    slack: float = 3.0           # + this, for in-flight requests and refresh timing
    propagation: float = 1.0     # a purge reaches the other workers within this
    versions: dict[str, list[Version]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    purges: dict[str, list[Purge]] = field(default_factory=dict)
    alias_targets: dict[str, list[str]] = field(default_factory=dict)  # every target tried
    alias_current: dict[str, str] = field(default_factory=dict)
    fallback: Version = field(init=False)
    t0: float = 0.0              # monotonic start of the traffic, for notes
    _variant_etags: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    _rendering: dict[tuple[str, str], asyncio.Future[tuple[str, int]]] = field(
        default_factory=dict)

    def __post_init__(self) -> None:
        data = FALLBACK_PATH.read_bytes()
        self.fallback = Version(data, etag_of(data), 0.0)

    # -- changes --------------------------------------------------------------------

    def seed(self, image_id: str, data: bytes) -> None:
        self.versions[image_id] = [Version(data, etag_of(data), 0.0)]

    def begin_version(self, image_id: str, data: bytes, source: str) -> Version:
        """A version about to be written to S3: servable from now on."""
        version = Version(data, etag_of(data), time.monotonic(), source=source)
        self.versions.setdefault(image_id, []).append(version)
        return version

    def commit_version(self, image_id: str, version: Version) -> None:
        """``version`` is now what S3 holds: every other one is superseded from now."""
        now = time.monotonic()
        for v in self.versions[image_id]:
            if v is not version and v.until is None:
                v.until = now
        # keep the current one last
        self.versions[image_id].remove(version)
        self.versions[image_id].append(version)

    def drop_version(self, image_id: str, version: Version) -> None:
        """A write that never reached S3: serving these bytes would be wrong."""
        if version in self.versions.get(image_id, []):
            self.versions[image_id].remove(version)

    def current(self, image_id: str) -> Version:
        return self.versions[image_id][-1]

    def purged(self, image_id: str, propagated: bool, version: int | None = None) -> None:
        self.purges.setdefault(image_id, []).append(Purge(time.monotonic(), propagated,
                                                          version))

    # -- variants -------------------------------------------------------------------

    async def variant_etag(self, data: bytes, etag: str, spec: Spec) -> tuple[str, int]:
        """(ETag, size) of ``spec`` rendered from ``data`` here, once per version."""
        key = (etag, spec.query)
        known = self._variant_etags.get(key)
        if known is not None:
            return known
        pending = self._rendering.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._rendering[key] = pending
            try:
                body = await asyncio.to_thread(spec.render, data)
                result = (etag_of(body), len(body))
                self._variant_etags[key] = result
                pending.set_result(result)
            except BaseException as exc:
                pending.set_exception(exc)
                raise
            finally:
                self._rendering.pop(key, None)
            return result
        return await asyncio.shield(pending)

    async def expected(self, v: Version, spec: Spec | None) -> tuple[str, int]:
        if spec is None:
            return v.etag, v.size
        return await self.variant_etag(v.data, v.etag, spec)

    # -- verdicts -------------------------------------------------------------------

    async def judge_image(self, image_id: str, spec: Spec | None, etag: str, x_cache: str,
                          started: float) -> tuple[str | None, str]:
        """(verdict, note) for an answer about ``image_id`` (see the module docstring);
        verdict None: no match (yet)."""
        if image_id in self.missing:
            fallback, _ = await self.expected(self.fallback, spec)
            return ("ok" if etag == fallback else None), ""
        versions = self.versions.get(image_id, [])
        # newest first: the current version, then versions still being written
        for v in reversed(versions):
            if (await self.expected(v, spec))[0] != etag:
                continue
            if v.until is None:
                return "ok", ""
            return self._outdated(image_id, v, x_cache, started)
        fallback, _ = await self.expected(self.fallback, spec)
        if etag == fallback:
            return "wrong:fallback-for-existing-object", f"{image_id} exists in S3"
        return None, ""

    def _outdated(self, image_id: str, v: Version, x_cache: str, started: float
                  ) -> tuple[str, str]:
        assert v.until is not None
        versions = self.versions[image_id]
        note = (f"{image_id}: bytes of version {versions.index(v) + 1} of {len(versions)}, "
                f"replaced in S3 at t={v.until - self.t0:.1f} s "
                f"(now {versions[-1].etag}, {versions[-1].source})")
        purges = self.purges.get(image_id, [])
        for purge in purges:
            if purge.propagated and v.until <= purge.done <= started - self.propagation:
                history = ", ".join(f"t={p.done - self.t0:.1f} s v{p.version}"
                                    f"{'' if p.propagated else ' (not propagated)'}"
                                    for p in purges)
                return "outdated:after-purge", f"{note}; purges (answered version): {history}"
        if x_cache == "STALE":
            return "outdated:stale", note
        if started <= v.until + self.ttl + self.slack:
            return "outdated:in-ttl", note
        return "outdated:beyond-ttl", note

    async def judge_user(self, user_id: str, spec: Spec | None, etag: str, x_cache: str,
                         started: float) -> tuple[str | None, str]:
        fallback, _ = await self.expected(self.fallback, spec)
        if etag == fallback:
            return "ok:user-fallback", ""  # alias unknown (Redis down/empty): allowed
        current = self.alias_current.get(user_id)
        targets = self.alias_targets.get(user_id, [])
        for target in ([current] if current else []) + [t for t in targets if t != current]:
            verdict, note = await self.judge_image(target, spec, etag, x_cache, started)
            if verdict is None:
                continue
            if target != current and verdict == "ok":
                return "ok:previous-alias", f"{user_id} -> {target}, now -> {current}"
            return verdict, f"{user_id} -> {target}; {note}" if note else ""
        return None, ""

    async def size_of(self, etag: str, image_id: str | None, spec: Spec | None) -> int | None:
        """The byte size of the version ``etag`` names (for HEAD's Content-Length)."""
        candidates = [self.fallback]
        if image_id is not None:
            candidates += self.versions.get(image_id, [])
        for v in candidates:
            e, size = await self.expected(v, spec)
            if e == etag:
                return size
        return None
