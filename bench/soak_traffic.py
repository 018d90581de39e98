"""The soak's client: a bounded-rate request mix against the gateway, every answer
checked against bench/soak_model.py, and an admin loop that purges, re-uploads
and re-aliases while the traffic runs.

Request kinds (and the statuses each may get; anything else is "unexpected"):

=================  ===========================================  ======================
kind               request                                      expected statuses
=================  ===========================================  ======================
get                GET /images/{id} (Zipf over the id space,     200, 502, 503, 504
                   some ids missing in S3 -> fallback)
get-cond           the same with If-None-Match: an ETag seen      200, 304, 502, 503, 504
                   before (sometimes an outdated one)
head               HEAD /images/{id}                             200, 502, 503, 504
variant            GET /images/{id}?w=..&format=.. (3 specs)      200, 502, 503, 504
variant-cond       the same with If-None-Match                    200, 304, 502, 503, 504
user               GET /images/user/{u} (alias set by admin)      200, 502, 503, 504
user-variant       GET /images/user/{u}?w=64&h=64&format=webp     200, 502, 503, 504
bad-id             traversal, NUL, unicode, overlong ids          400
bad-param          w=65, repeated w, format=bmp, q=101 ...        400
bad-method         POST /images/{id}                              405
admin-purge        DELETE /admin/images/{id}                      200
admin-alias        PUT /admin/users/{u}                           200, 503 (Redis down)
admin-upload       PUT /admin/images/{id} (new picture)           200, 502, 503, 504
=================  ===========================================  ======================

503 for the image kinds: origin fetch queue full or transform pool saturated.
500 is never expected anywhere.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from bench import images
from bench.soak_model import MAX_PIXELS, SPECS, Model, Spec, etag_of
from gateway.variants.transform import normalise_upload
from tests.support.s3_server import S3Bucket

IMAGE_OK = frozenset({200, 502, 503, 504})
COND_OK = IMAGE_OK | {304}
EXPECTED: dict[str, frozenset[int]] = {
    "get": IMAGE_OK, "get-cond": COND_OK, "head": IMAGE_OK,
    "variant": IMAGE_OK, "variant-cond": COND_OK,
    "user": IMAGE_OK, "user-variant": IMAGE_OK,
    "bad-id": frozenset({400}), "bad-param": frozenset({400}), "bad-method": frozenset({405}),
    "admin-purge": frozenset({200}), "admin-alias": frozenset({200, 503}),
    "admin-upload": frozenset({200, 502, 503, 504}),
}
SUCCESS: dict[str, frozenset[int]] = {
    "bad-id": frozenset({400}), "bad-param": frozenset({400}),
    "bad-method": frozenset({405}),
}
DEFAULT_SUCCESS = frozenset({200, 304})

MIX = (  # kind, weight (per cent of the traffic loops' requests)
    ("get", 40), ("get-cond", 14), ("head", 7), ("variant", 14), ("variant-cond", 4),
    ("user", 7), ("user-variant", 3), ("bad-id", 5), ("bad-param", 4), ("bad-method", 2),
)
ADMIN_MIX = (("purge", 35), ("s3-reupload+purge", 25), ("s3-reupload", 15),
             ("gateway-upload", 10), ("alias", 15))

# Keys the key rule refuses (README, Object keys): since issue 10 '.hidden', 'a b',
# 'é.png', a backslash and 256-byte keys are valid object keys, so no longer here.
BAD_IDS = (
    "/images/..%2f..%2fetc%2fpasswd", "/images/%2e%2e", "/images/a%00b", "/images/a%01b",
    "/images/" + "x" * 1025, "/images/a%zzb", "/images/%ff.png", "/images/a/../b",
    "/images/a//b",
)
BAD_PARAMS = ("w=65", "w=64&w=64", "format=bmp", "q=101", "w=abc", "w=64&h=64&fit=stretch",
              "h=")
MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
         (b"GIF8", "image/gif"))


def magic_type(body: bytes) -> str | None:
    for prefix, content_type in MAGIC:
        if body.startswith(prefix):
            return content_type
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    if body[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    return None


class Pacer:
    """At most ``rate`` starts per second, shared by every loop."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class Zipf:
    """Ids drawn with weight 1/rank^s; ranks shuffled over the ids with a seed."""

    def __init__(self, ids: list[str], s: float, rng: random.Random) -> None:
        self.ids = list(ids)
        rng.shuffle(self.ids)
        self.cum = list(itertools.accumulate(1.0 / (r + 1) ** s for r in range(len(self.ids))))
        self.rng = rng

    def pick(self) -> str:
        x = self.rng.random() * self.cum[-1]
        return self.ids[min(bisect.bisect_left(self.cum, x), len(self.ids) - 1)]


def excerpt(body: bytes, limit: int) -> str:
    """A body as the report can show it: text (a JSON error) as is, a picture by size."""
    head = body[:limit]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes of binary body>"
    if not text.isprintable():
        return f"<{len(body)} bytes of binary body>"
    return text


@dataclass
class Request:
    kind: str
    method: str
    url: URL
    image_id: str | None = None     # None for user requests and bad ones
    user: str | None = None
    spec: Spec | None = None
    sent_etag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None

    def describe(self) -> str:
        extra = f" If-None-Match: {self.sent_etag}" if self.sent_etag else ""
        return f"{self.method} {self.url.raw_path_qs}{extra}"


@dataclass
class Stats:
    """Everything counted, for the report; ``window`` is reset by each 5-s sample."""

    answered: Counter[str] = field(default_factory=Counter)            # kind
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # kind, status
    x_cache: Counter[str] = field(default_factory=Counter)
    status_x_cache: Counter[tuple[int, str]] = field(default_factory=Counter)
    exceptions: Counter[tuple[str, str]] = field(default_factory=Counter)  # kind, exc
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # label, fault
    verdicts: Counter[str] = field(default_factory=Counter)
    verdicts_by_fault: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexpected: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # kind, st, f
    http_500: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    error_latency_max: dict[str, float] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    deferred: list[tuple[Request, str, str, float, dict[str, Any]]] = field(
        default_factory=list)
    admin_notes: Counter[str] = field(default_factory=Counter)
    admin_events: list[dict[str, Any]] = field(default_factory=list)
    slow: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # kind, answer, fault
    window: Counter[str] = field(default_factory=Counter)
    by_fault: Counter[tuple[str, str]] = field(default_factory=Counter)  # fault, outcome
    fault_answers: Counter[tuple[str, str]] = field(default_factory=Counter)  # fault, answer

    def example(self, category: str, record: dict[str, Any], keep: int = 12) -> None:
        if len(self.examples[category]) < keep:
            self.examples[category].append(record)

    @property
    def wrong(self) -> int:
        return sum(n for v, n in self.verdicts.items() if v.startswith("wrong:"))

    @property
    def total(self) -> int:
        return sum(self.answered.values())


class Traffic:
    def __init__(self, base_url: str, model: Model, bucket: S3Bucket, *, token: str,
                 rate: float, concurrency: int, seed: int, fault_label: Callable[[], str],
                 fault_counter: Callable[[], Counter[str] | None], started: float,
                 out_dir: Path, users: int = 20, zipf_s: float = 1.0,
                 client_timeout: float = 30.0, slow_after: float = 4.5,
                 admin_interval: tuple[float, float] = (1.0, 3.0),
                 log: Callable[[str], None] = print) -> None:
        self.base = URL(base_url)
        self.model = model
        self.bucket = bucket
        self.token = token
        self.rate = rate
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.seed = seed
        self.fault_label = fault_label
        self.fault_counter = fault_counter
        self.t0 = started
        self.out_dir = out_dir
        self.client_timeout = client_timeout
        self.slow_after = slow_after
        self.admin_interval = admin_interval
        self.log = log
        self.stats = Stats()
        every = sorted(model.versions) + sorted(model.missing)
        self.zipf = Zipf(every, zipf_s, random.Random(seed + 1))
        self.existing = Zipf(sorted(model.versions), zipf_s, random.Random(seed + 2))
        self.users = [f"user-{i:02d}" for i in range(users)]
        self.seen_etags: dict[str, str] = {}
        self.mix_kinds = [k for k, _ in MIX]
        self.mix_cum = list(itertools.accumulate(w for _, w in MIX))
        self.admin_kinds = [k for k, _ in ADMIN_MIX]
        self.admin_cum = list(itertools.accumulate(w for _, w in ADMIN_MIX))
        self._picture_index = itertools.count(1_000_000)
        self._session: aiohttp.ClientSession | None = None
        self._wrong_dir = out_dir / "wrong"
        self._kept = 0

    # -- session ----------------------------------------------------------------------

    async def __aenter__(self) -> Traffic:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.client_timeout),
            connector=aiohttp.TCPConnector(limit=self.concurrency + 8),
            auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    # -- building requests ------------------------------------------------------------

    def _pick_kind(self) -> str:
        x = self.rng.random() * self.mix_cum[-1]
        return self.mix_kinds[bisect.bisect_right(self.mix_cum, x)]

    def _image_url(self, image_id: str, spec: Spec | None) -> URL:
        url = self.base.with_path(f"/images/{image_id}")
        return URL(f"{url}?{spec.query}", encoded=True) if spec else url

    def _conditional(self, req: Request, key: str) -> Request:
        etag = self.seen_etags.get(key)
        if req.image_id is not None and self.rng.random() < 0.2:
            older = [v for v in self.model.versions.get(req.image_id, []) if v.until]
            if older and req.spec is None:
                etag = self.rng.choice(older).etag  # must not be a 304 once outdated
        if etag is None:
            req.kind = req.kind.removesuffix("-cond")
            return req
        req.sent_etag = etag
        req.headers["If-None-Match"] = etag
        return req

    def next_request(self) -> Request:
        kind = self._pick_kind()
        rng = self.rng
        if kind in ("get", "get-cond", "head"):
            image_id = self.zipf.pick()
            req = Request(kind, "HEAD" if kind == "head" else "GET",
                          self._image_url(image_id, None), image_id=image_id)
            return self._conditional(req, str(req.url)) if kind == "get-cond" else req
        if kind in ("variant", "variant-cond"):
            image_id = self.zipf.pick()
            spec = rng.choice(SPECS)
            req = Request(kind, "GET", self._image_url(image_id, spec), image_id=image_id,
                          spec=spec)
            return self._conditional(req, str(req.url)) if kind == "variant-cond" else req
        if kind in ("user", "user-variant"):
            user = rng.choice(self.users)
            user_spec = SPECS[0] if kind == "user-variant" else None
            url = self.base.with_path(f"/images/user/{user}")
            if user_spec:
                url = URL(f"{url}?{user_spec.query}", encoded=True)
            return Request(kind, "GET", url, user=user, spec=user_spec)
        if kind == "bad-id":
            return Request(kind, rng.choice(("GET", "HEAD")),
                           URL(f"{self.base}{rng.choice(BAD_IDS)}", encoded=True))
        if kind == "bad-param":
            image_id = self.zipf.pick()
            return Request(kind, "GET", URL(f"{self.base}/images/{image_id}?"
                                            f"{rng.choice(BAD_PARAMS)}", encoded=True))
        image_id = self.zipf.pick()
        return Request("bad-method", "POST", self._image_url(image_id, None), data=b"x")

    # -- sending and checking ---------------------------------------------------------

    async def send(self, req: Request) -> tuple[int | None, dict[str, Any]]:
        """Send, check, count. Returns (status or None, the parsed JSON for admin calls)."""
        fault = self.fault_label()
        event_counter = self.fault_counter()
        started = time.monotonic()
        status: int | None = None
        x_cache = "-"
        payload: dict[str, Any] = {}
        body = b""
        headers: Any = {}
        error: str | None = None
        try:
            async with self.session.request(req.method, req.url, headers=req.headers,
                                            data=req.data, allow_redirects=False) as resp:
                body = await resp.read()
                status = resp.status
                headers = resp.headers
                x_cache = resp.headers.get("X-Cache", "-")
        except TimeoutError:
            error = "client-timeout"
        except aiohttp.ClientError as exc:
            error = type(exc).__name__
        elapsed = time.monotonic() - started
        st = self.stats
        st.window["requests"] += 1
        if error is not None:
            label = f"exception {error}"
            st.exceptions[(req.kind, error)] += 1
            st.errors[(label, fault)] += 1
            st.window[label] += 1
            st.by_fault[(fault, "client exception")] += 1
            st.fault_answers[(fault, label)] += 1
            if event_counter is not None:
                event_counter[label] += 1
            st.example(f"exception {error}", self._record(req, None, "-", fault, started,
                                                          elapsed, error))
            return None, payload
        assert status is not None
        st.answered[req.kind] += 1
        st.statuses[(req.kind, status)] += 1
        st.x_cache[x_cache] += 1
        st.status_x_cache[(status, x_cache)] += 1
        st.latencies[req.kind].append(elapsed)
        st.fault_answers[(fault, f"{status} {x_cache}")] += 1
        if event_counter is not None:
            event_counter[f"{status} {x_cache}"] += 1
        if elapsed > self.slow_after:
            st.example(f"slow answer (> {self.slow_after:g} s)", self._record(
                req, status, x_cache, fault, started, elapsed, excerpt(body, 120)),
                keep=30)
            st.slow[(req.kind, f"{status} {x_cache}", fault)] += 1
        ok_statuses = SUCCESS.get(req.kind, DEFAULT_SUCCESS)
        if status not in ok_statuses:
            label = f"{status} {x_cache}"
            st.errors[(label, fault)] += 1
            st.window[label] += 1
            st.error_latency_max[label] = max(st.error_latency_max.get(label, 0.0), elapsed)
            st.by_fault[(fault, "error answer")] += 1
        else:
            st.by_fault[(fault, "success")] += 1
        if status == 500:
            st.http_500 += 1
            st.example("http 500", self._record(req, status, x_cache, fault, started, elapsed,
                                                excerpt(body, 300)))
        if status not in EXPECTED[req.kind]:
            st.unexpected[(req.kind, status, fault)] += 1
            st.example(f"unexpected {req.kind} {status}", self._record(
                req, status, x_cache, fault, started, elapsed, excerpt(body, 300)))
        if req.kind.startswith("admin-") and body:
            with contextlib.suppress(ValueError):
                loaded = json.loads(body)
                if isinstance(loaded, dict):
                    payload = loaded
        if status in (200, 304) and (req.image_id is not None or req.user is not None):
            await self._check_image(req, status, headers, body, x_cache, fault, started,
                                    elapsed)
        return status, payload

    def _record(self, req: Request, status: int | None, x_cache: str, fault: str,
                started: float, elapsed: float, detail: str = "") -> dict[str, Any]:
        return {"at_s": round(started - self.t0, 2), "request": req.describe(),
                "status": status, "x_cache": x_cache, "fault": fault,
                "latency_s": round(elapsed, 3), "detail": detail}

    async def _check_image(self, req: Request, status: int, headers: Any, body: bytes,
                           x_cache: str, fault: str, started: float, elapsed: float) -> None:
        header_etag = headers.get("ETag", "")
        problems: list[str] = []
        if status == 304:
            etag = header_etag
            if req.sent_etag is None:
                problems.append("wrong:304-without-condition")
            elif header_etag != req.sent_etag:
                problems.append("wrong:304-etag-differs-from-if-none-match")
        elif req.method == "HEAD":
            etag = header_etag
        else:
            etag = etag_of(body)
            if header_etag != etag:
                problems.append("wrong:etag-header-is-not-the-body's")
            declared = headers.get("Content-Type", "")
            if magic_type(body) != declared:
                problems.append("wrong:content-type-is-not-the-body's")
            if req.sent_etag is not None and etag == req.sent_etag:
                problems.append("protocol:200-although-if-none-match-matched")
        if x_cache == "FALLBACK" and etag != (await self.model.expected(self.model.fallback,
                                                                          req.spec))[0]:
            problems.append("wrong:x-cache-fallback-with-other-bytes")
        if status == 200 and etag:
            key = str(req.url)
            self.seen_etags[key] = etag
        if req.user is not None:
            verdict, note = await self.model.judge_user(req.user, req.spec, etag, x_cache,
                                                        started)
        else:
            assert req.image_id is not None
            verdict, note = await self.model.judge_image(req.image_id, req.spec, etag,
                                                         x_cache, started)
        if verdict is not None and req.method == "HEAD" and verdict.startswith(("ok", "out")):
            size = await self.model.size_of(etag, req.image_id, req.spec)
            if size is not None and headers.get("Content-Length") != str(size):
                problems.append("wrong:head-content-length")
        record = self._record(req, status, x_cache, fault, started, elapsed,
                              f"etag {etag}" + (f"; {note}" if note else ""))
        for problem in problems:
            self._count_verdict(problem, fault, record, body)
        if verdict is None:
            self.stats.deferred.append((req, etag, x_cache, started, record))
            self._keep_body(record, body)
            return
        self._count_verdict(verdict, fault, record, body)

    def _count_verdict(self, verdict: str, fault: str, record: dict[str, Any],
                       body: bytes) -> None:
        st = self.stats
        st.verdicts[verdict] += 1
        if verdict != "ok":
            st.verdicts_by_fault[(verdict, fault)] += 1
            st.example(verdict, record)
        if verdict.startswith("wrong:"):
            self._keep_body(record, body)

    def _keep_body(self, record: dict[str, Any], body: bytes) -> None:
        """The first 40 suspicious bodies go to out/soak/wrong/ for a look."""
        if not body or self._kept >= 40:
            return
        self._kept += 1
        self._wrong_dir.mkdir(parents=True, exist_ok=True)
        name = f"{record['at_s']:09.2f}-{etag_of(body)[1:13]}.bin"
        (self._wrong_dir / name).write_bytes(body)
        record["body_saved"] = f"wrong/{name}"

    async def settle_deferred(self) -> None:
        """Judge again what matched nothing at the time (uploads read back since)."""
        pending, self.stats.deferred = self.stats.deferred, []
        for req, etag, x_cache, started, record in pending:
            if req.user is not None:
                verdict, _ = await self.model.judge_user(req.user, req.spec, etag, x_cache,
                                                         started)
            else:
                assert req.image_id is not None
                verdict, _ = await self.model.judge_image(req.image_id, req.spec, etag,
                                                          x_cache, started)
            if verdict == "ok":
                verdict = "ok:recognised-after-read-back"
            self._count_verdict(verdict or "wrong:bytes-never-stored-for-this-id",
                                record["fault"], record, b"")

    # -- the loops ----------------------------------------------------------------------

    async def traffic_loop(self, pacer: Pacer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await pacer.wait()
            if stop.is_set():
                return
            await self.send(self.next_request())

    async def admin_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.admin_interval))
            if stop.is_set():
                return
            x = self.rng.random() * self.admin_cum[-1]
            op = self.admin_kinds[bisect.bisect_right(self.admin_cum, x)]
            self.stats.admin_notes[f"op {op}"] += 1
            try:
                await self.admin_op(op)
            except Exception as exc:  # the soak goes on; the report shows it
                self.stats.admin_notes[f"op {op} raised {type(exc).__name__}"] += 1
                self.log(f"admin op {op} raised {exc!r}")

    async def admin_op(self, op: str) -> None:
        if op == "purge":
            await self.purge(self.existing.pick())
        elif op in ("s3-reupload", "s3-reupload+purge"):
            image_id = self.existing.pick()
            await self.s3_reupload(image_id)
            if op == "s3-reupload+purge":
                await self.purge(image_id)
        elif op == "gateway-upload":
            await self.gateway_upload(self.existing.pick())
        else:
            await self.set_alias(self.rng.choice(self.users), self.existing.pick())

    def admin_log(self, op: str, target: str, status: int | None,
                  payload: dict[str, Any]) -> None:
        self.stats.admin_events.append({
            "t": round(time.monotonic() - self.t0, 2), "op": op, "target": target,
            "status": status, "fault": self.fault_label(),
            **{k: payload[k] for k in ("version", "propagated", "etag") if k in payload}})

    async def purge(self, image_id: str) -> None:
        url = self.base.with_path(f"/admin/images/{image_id}")
        status, payload = await self.send(Request("admin-purge", "DELETE", url,
                                                  headers=self.admin_headers()))
        if status == 200:
            propagated = bool(payload.get("propagated"))
            self.stats.admin_notes[f"purge propagated={propagated}"] += 1
            self.model.purged(image_id, propagated, payload.get("version"))
        self.admin_log("purge", image_id, status, payload)

    async def _new_picture(self, like: str) -> tuple[bytes, str]:
        """Fresh bytes of the same format as ``like``'s extension."""
        want = like.rsplit(".", 1)[-1]
        while True:
            fmt, data = await asyncio.to_thread(images.make_picture,
                                                next(self._picture_index), self.seed)
            if fmt == want:
                return data, images.CONTENT_TYPES[fmt]

    async def s3_reupload(self, image_id: str) -> None:
        """Changed bytes straight into S3 (not through the proxy: faults don't hit it)."""
        data, content_type = await self._new_picture(image_id)
        version = self.model.begin_version(image_id, data, "s3-put")
        try:
            await asyncio.to_thread(self.bucket.put, image_id, data,
                                    content_type=content_type, ACL="public-read")
        except Exception:
            await self._read_back(image_id, version)
            raise
        self.model.commit_version(image_id, version)
        self.stats.admin_notes["s3 re-uploads"] += 1
        self.admin_log("s3-put", image_id, None, {"etag": version.etag})

    async def gateway_upload(self, image_id: str) -> None:
        """PUT /admin/images/{id}: the gateway normalises, stores in S3 and purges."""
        data, _ = await self._new_picture(image_id)
        stored = await asyncio.to_thread(normalise_upload, data, 128, "original", 90,
                                         MAX_PIXELS)
        version = self.model.begin_version(image_id, stored.body, "gateway-upload")
        url = self.base.with_path(f"/admin/images/{image_id}")
        status, payload = await self.send(Request("admin-upload", "PUT", url, data=data,
                                                  headers=self.admin_headers()))
        if status == 200 and payload.get("etag") != version.etag:
            self.stats.admin_notes["upload: gateway etag differs from local normalise"] += 1
        await self._read_back(image_id, version)
        if status == 200:
            self.model.purged(image_id, bool(payload.get("propagated")), payload.get("version"))
        self.admin_log("gateway-upload", image_id, status, payload)

    async def _read_back(self, image_id: str, version: Any) -> None:
        """What S3 holds now decides which version is current."""
        data = await asyncio.to_thread(self.bucket.get, image_id)
        etag = etag_of(data)
        if etag == version.etag:
            self.model.commit_version(image_id, version)
            return
        self.model.drop_version(image_id, version)
        if etag != self.model.current(image_id).etag:
            known = next((v for v in self.model.versions[image_id] if v.etag == etag), None)
            if known is None:
                known = self.model.begin_version(image_id, data, "readback")
                known.since = version.since
            self.model.commit_version(image_id, known)
            self.stats.admin_notes["read back: S3 holds bytes the soak did not expect"] += 1

    async def set_alias(self, user: str, image_id: str, *, attempts: int = 1) -> bool:
        self.model.alias_targets.setdefault(user, []).append(image_id)
        url = self.base.with_path(f"/admin/users/{user}")
        for attempt in range(attempts):
            status, _ = await self.send(Request(
                "admin-alias", "PUT", url, data=json.dumps({"image_id": image_id}).encode(),
                headers={**self.admin_headers(), "Content-Type": "application/json"}))
            self.admin_log("alias", f"{user} -> {image_id}", status, {})
            if status == 200:
                self.model.alias_current[user] = image_id
                return True
            if attempt + 1 < attempts:
                await asyncio.sleep(0.5)
        return False

    async def set_all_aliases(self, attempts: int = 40) -> int:
        """Every user's alias (again: after a Redis restart lost them); how many failed."""
        failed = 0
        for user in self.users:
            target = self.model.alias_current.get(user) or self.existing.pick()
            if not await self.set_alias(user, target, attempts=attempts):
                failed += 1
        return failed

    async def run(self, duration: float, stop: asyncio.Event) -> None:
        pacer = Pacer(self.rate)
        loops = [asyncio.create_task(self.traffic_loop(pacer, stop), name=f"loop-{i}")
                 for i in range(self.concurrency)]
        loops.append(asyncio.create_task(self.admin_loop(stop), name="admin"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
        stop.set()
        await asyncio.gather(*loops)
