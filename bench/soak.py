"""The soak run (issue 7): ``make soak`` / ``python -m bench.soak``; also part of
``make bench`` with BENCH_SOAK=1.

Starts moto S3 behind the fault-injecting proxy (tests/support/proxy.py),
redis-server and the gateway (2 workers, admin token, a disk cache under
bench/out/soak/, memory and disk bounds small enough that both evict, disk.ttl
30 s so revalidation and stale paths run), then for SOAK_DURATION seconds
(600; SOAK_QUICK=1: 60) drives a bounded-rate request mix at it
(bench/soak_traffic.py) while a schedule injects one fault at a time into S3 or
Redis and heals it. Every answer is checked (bench/soak_model.py); RSS, open fds
and the disk cache are sampled every 5 s. Writes bench/SOAK.md (and
bench/out/soak/: samples.csv, soak.json, the gateway's log).

Exit status 1 when the run breaks a rule (see RULES in bench/soak_report.py):
wrong bytes, replaced bytes served after a propagated purge (or beyond disk.ttl),
any 500, an unexpected status, a client timeout (a hang), a worker restart, or
RSS grown more than 20 % after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import images, soak_report, stack
from bench.procs import RssSampler, session_pids, status_kb
from bench.results import OUT, REPO_ROOT
from bench.run import _interrupt_on_sigterm, _raise_fd_limit
from bench.settings import env_float, env_int
from bench.soak_model import Model
from bench.soak_traffic import Traffic
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Bucket

MiB = 1024 * 1024
SOAK_DIR = OUT / "soak"
SOAK_IMAGES = OUT / "soak-images"
SOAK_MD = Path(__file__).resolve().parent / "SOAK.md"
ADMIN_TOKEN = "soak-admin-token-0123456789"

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error. Please try again.</Message></Error>")


def say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True)
class SoakSettings:
    quick: bool
    duration: float          # seconds of traffic
    rate: float              # requests/s started at most (all traffic loops together)
    concurrency: int         # traffic loops (each one request at a time)
    ids: int                 # id space; `missing` of it never exists in S3
    missing: float
    users: int
    seed: int
    workers: int
    memory_max_bytes: int
    disk_max_bytes: int
    disk_ttl: int
    read_timeout: float      # origin.read_timeout (connect_timeout stays 2 s)
    sample_every: float
    warmup: float            # RSS growth is judged after this
    fault_first: float
    fault_length: tuple[float, float]
    fault_gap: tuple[float, float]
    recovery: float          # errors this long after a heal are blamed on that fault
    rss_growth_limit: float

    @classmethod
    def from_env(cls) -> SoakSettings:
        quick = os.environ.get("SOAK_QUICK", "").strip().lower() in ("1", "true", "yes", "on")
        duration = env_float("SOAK_DURATION", 60.0 if quick else 600.0)
        short = quick or duration < 180
        return cls(
            quick=quick,
            duration=duration,
            rate=env_float("SOAK_RATE", 150.0),
            concurrency=env_int("SOAK_CONCURRENCY", 32),
            ids=env_int("SOAK_IDS", 2000),
            missing=env_float("SOAK_MISSING", 0.05),
            users=env_int("SOAK_USERS", 20),
            seed=env_int("SOAK_SEED", 2024),
            workers=env_int("SOAK_WORKERS", 2),
            memory_max_bytes=env_int("SOAK_MEMORY_MAX_BYTES", 8 * MiB),
            disk_max_bytes=env_int("SOAK_DISK_MAX_BYTES", 32 * MiB),
            disk_ttl=env_int("SOAK_DISK_TTL", 30),
            read_timeout=env_float("SOAK_READ_TIMEOUT", 2.0),
            sample_every=env_float("SOAK_SAMPLE_EVERY", 5.0),
            warmup=env_float("SOAK_WARMUP", 15.0 if short else 60.0),
            fault_first=5.0 if short else 20.0,
            fault_length=(3.0, 4.0) if short else (5.0, 10.0),
            fault_gap=(2.0, 3.0) if short else (15.0, 22.0),
            recovery=15.0,
            rss_growth_limit=env_float("SOAK_RSS_GROWTH_LIMIT", 0.20),
        )


# ---- faults ----------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    what: str
    apply: Callable[[], object]
    heal: Callable[[], object]


@dataclass
class FaultEvent:
    name: str
    what: str
    planned_at: float
    length: float
    started: float = 0.0     # seconds since the traffic began
    ended: float = 0.0
    heal_s: float = 0.0      # how long healing took (redis restart: until PING)
    notes: list[str] = field(default_factory=list)
    during: Counter[str] = field(default_factory=Counter)  # answers to requests sent...
    after: Counter[str] = field(default_factory=Counter)   # ...while on / recovering


def fault_catalogue(proxy: FaultProxy, redis: RedisServer, read_timeout: float) -> list[Fault]:
    slow = read_timeout + 1.5
    return [
        Fault("s3-503-slowdown", "every S3 request answered 503 SlowDown",
              lambda: proxy.fail_with(503, SLOWDOWN), proxy.heal),
        Fault("s3-500", "every S3 request answered 500 InternalError",
              lambda: proxy.fail_with(500, INTERNAL), proxy.heal),
        Fault("s3-refused", "the S3 proxy stops listening (ECONNREFUSED), open "
              "connections dropped", proxy.refuse, proxy.heal),
        Fault("s3-slow-first-byte", f"S3 answers held {slow:g} s before the first byte "
              f"(origin.read_timeout {read_timeout:g} s)",
              lambda: proxy.delay_first_byte(slow), proxy.heal),
        Fault("s3-slow-body", "S3 bodies sent at 2,000 bytes/s (a 15 kB picture takes "
              "7.5 s)", lambda: proxy.slow_body(2000), proxy.heal),
        Fault("s3-reset-mid-body", "S3 sends headers and half the body, then a TCP RST",
              proxy.reset_mid_body, proxy.heal),
        Fault("s3-truncated-body", "S3 announces the full Content-Length, sends half, "
              "closes (FIN)", proxy.truncate_body, proxy.heal),
        Fault("redis-paused", "redis-server SIGSTOPped (connects succeed, nothing answers)",
              redis.pause, redis.resume),
        Fault("redis-killed", "redis-server SIGKILLed, restarted empty on the same port "
              "when healed (aliases set again through the admin API)",
              redis.kill, redis.start),
    ]


def plan_faults(settings: SoakSettings, names: list[str]) -> list[FaultEvent]:
    """One fault at a time, every type in turn (shuffled per round), seeded."""
    rng = random.Random(settings.seed + 99)
    plan: list[FaultEvent] = []
    t = settings.fault_first
    order: list[str] = []
    while True:
        length = rng.uniform(*settings.fault_length)
        if t + length > settings.duration - 5:
            break
        if not order:
            order = list(names)
            rng.shuffle(order)
        plan.append(FaultEvent(order.pop(), "", round(t, 1), round(length, 1)))
        t += length + rng.uniform(*settings.fault_gap)
    return plan


class FaultSchedule:
    def __init__(self, faults: list[Fault], plan: list[FaultEvent], recovery: float) -> None:
        self.faults = {f.name: f for f in faults}
        self.plan = plan
        self.recovery = recovery
        for event in plan:
            event.what = self.faults[event.name].what
        self.active: str | None = None
        self.last: tuple[str, float] | None = None  # name, monotonic end
        self.current: FaultEvent | None = None
        self.previous: FaultEvent | None = None
        self.t0 = 0.0

    def label(self) -> str:
        """The fault in force now, or "after <fault>" while the gateway recovers."""
        if self.active is not None:
            return self.active
        if self.last is not None and time.monotonic() - self.last[1] < self.recovery:
            return f"after {self.last[0]}"
        return "none"

    def counter(self) -> Counter[str] | None:
        """Where the answer to a request sent now is counted: the fault event in force,
        or the one recovering (its ``after``), else nowhere."""
        if self.current is not None:
            return self.current.during
        if (self.previous is not None and self.last is not None
                and time.monotonic() - self.last[1] < self.recovery):
            return self.previous.after
        return None

    async def run(self, stop: asyncio.Event, traffic: Traffic) -> None:
        for event in self.plan:
            if await _sleep_until(stop, self.t0 + event.planned_at):
                return
            fault = self.faults[event.name]
            say(f"fault on: {event.name} for {event.length:g} s ({fault.what})")
            try:
                await asyncio.to_thread(fault.apply)
            except Exception as exc:  # recorded; the schedule goes on
                event.notes.append(f"applying it failed: {exc!r}")
                say(f"fault {event.name} could not be applied: {exc!r}")
            event.started = time.monotonic() - self.t0
            self.active = event.name
            self.current = event
            stopped = await _sleep_until(stop, time.monotonic() + event.length)
            began = time.monotonic()
            try:
                await asyncio.to_thread(fault.heal)
            except Exception as exc:
                event.notes.append(f"healing it failed: {exc!r}")
                say(f"fault {event.name} could not be healed: {exc!r}")
            finally:
                event.heal_s = time.monotonic() - began
                event.ended = time.monotonic() - self.t0
                self.active = None
                self.current = None
                self.previous = event
                self.last = (event.name, time.monotonic())
            if event.name == "redis-killed":
                failed = await traffic.set_all_aliases()
                event.notes.append(f"aliases set again after the restart ({failed} of "
                                   f"{len(traffic.users)} failed)")
            say(f"fault off: {event.name} (healed in {event.heal_s:.2f} s)")
            if stopped:
                return

    def heal_all(self) -> None:
        for fault in self.faults.values():
            with contextlib.suppress(Exception):
                fault.heal()


async def _sleep_until(stop: asyncio.Event, deadline: float) -> bool:
    """Sleep until ``deadline`` (monotonic); True when ``stop`` came first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, deadline - time.monotonic()))
    return stop.is_set()


# ---- sampling ----------------------------------------------------------------------


def disk_usage(root: Path) -> tuple[int, int, int, int]:
    """(du bytes, apparent bytes, entry files, temp files) under ``root``."""
    du = apparent = files = temps = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            du += st.st_blocks * 512
            apparent += st.st_size
            if name.startswith(".tmp-"):
                temps += 1
            else:
                files += 1
    return du, apparent, files, temps


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def take_sample(gw: stack.Gateway, cache_dir: Path) -> dict[str, Any]:
    supervisor = gw.process.pid
    pids = session_pids(supervisor)
    workers = [p for p in gw.worker_pids() if p in pids]
    rss = {pid: status_kb(pid, "VmRSS") for pid in pids}
    du, apparent, files, temps = disk_usage(cache_dir)
    return {
        "rss": rss,
        "rss_sum": sum(rss.values()),
        "roles": {pid: ("supervisor" if pid == supervisor else
                        "worker" if pid in workers else "other") for pid in pids},
        "fds": {pid: fd_count(pid) for pid in workers},
        "workers": workers,
        "disk_du": du, "disk_apparent": apparent, "disk_files": files, "disk_temps": temps,
    }


async def sample_loop(settings: SoakSettings, gw: stack.Gateway, cache_dir: Path,
                      traffic: Traffic, schedule: FaultSchedule, samples: list[dict[str, Any]],
                      stop: asyncio.Event, t0: float) -> None:
    tick = 0
    last_log = 0.0
    while True:
        tick += 1
        if await _sleep_until(stop, t0 + tick * settings.sample_every):
            return
        sample = await asyncio.to_thread(take_sample, gw, cache_dir)
        window = traffic.stats.window
        traffic.stats.window = type(window)()
        t = time.monotonic() - t0
        requests = window.pop("requests", 0)
        sample.update({"t": round(t, 1), "requests": requests,
                       "rps": round(requests / settings.sample_every, 1),
                       "errors": dict(window), "fault": schedule.label()})
        samples.append(sample)
        if t - last_log >= 30 or tick == 1:
            last_log = t
            errs = sum(window.values())
            say(f"t={t:4.0f} s  {sample['rps']:6.1f} req/s  errors {errs:4d}  "
                f"RSS {sample['rss_sum'] / MiB:6.1f} MiB  disk {sample['disk_du'] / MiB:5.1f} "
                f"MiB  fds {list(sample['fds'].values())}  fault {sample['fault']}  "
                f"wrong {traffic.stats.wrong}  500s {traffic.stats.http_500}")


# ---- the run -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "platform": platform.platform()}


def gateway_env(settings: SoakSettings, bucket: S3Bucket, proxy: FaultProxy,
                redis: RedisServer, cache_dir: Path) -> dict[str, str]:
    return {
        **bucket.env(proxy.url),
        "AWS_EC2_METADATA_DISABLED": "true",
        "GATEWAY_REDIS_URL": redis.url,
        "GATEWAY_SERVER_WORKERS": str(settings.workers),
        "GATEWAY_SERVER_ACCESS_LOG": "false",
        "GATEWAY_MEMORY_MAX_BYTES": str(settings.memory_max_bytes),
        "GATEWAY_DISK_PATH": str(cache_dir),
        "GATEWAY_DISK_MAX_BYTES": str(settings.disk_max_bytes),
        "GATEWAY_DISK_TTL": str(settings.disk_ttl),
        "GATEWAY_ORIGIN_READ_TIMEOUT": f"{settings.read_timeout:g}",
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_LOG_LEVEL": "INFO",
    }


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
            http.get(f"{url}/metrics") as resp:
        return await resp.text()


async def drive(settings: SoakSettings, gw: stack.Gateway, model: Model, bucket: S3Bucket,
                schedule: FaultSchedule, cache_dir: Path, result: dict[str, Any]) -> None:
    stop = asyncio.Event()
    samples: list[dict[str, Any]] = result["samples"]
    t0 = time.monotonic()
    traffic = Traffic(gw.url, model, bucket, token=ADMIN_TOKEN, rate=settings.rate,
                      concurrency=settings.concurrency, seed=settings.seed,
                      fault_label=schedule.label, fault_counter=schedule.counter,
                      started=t0, out_dir=SOAK_DIR,
                      users=settings.users, slow_after=2.0 + settings.read_timeout + 0.5,
                      log=say)
    result["traffic"] = traffic
    async with traffic:
        failed = await traffic.set_all_aliases(attempts=10)
        if failed:
            raise RuntimeError(f"could not set {failed} user aliases before the soak")
        t0 = time.monotonic()
        traffic.t0 = t0
        model.t0 = t0
        schedule.t0 = t0
        first = await asyncio.to_thread(take_sample, gw, cache_dir)
        first.update({"t": 0.0, "requests": 0, "rps": 0.0, "errors": {}, "fault": "none"})
        samples.append(first)
        say(f"traffic: {settings.duration:g} s, <= {settings.rate:g} req/s, "
            f"{settings.concurrency} loops; {len(schedule.plan)} faults planned")
        tasks = [
            asyncio.create_task(sample_loop(settings, gw, cache_dir, traffic, schedule,
                                            samples, stop, t0)),
            asyncio.create_task(schedule.run(stop, traffic)),
        ]
        try:
            await traffic.run(settings.duration, stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            result["elapsed"] = time.monotonic() - t0
        await traffic.settle_deferred()
        last = await asyncio.to_thread(take_sample, gw, cache_dir)
        last.update({"t": round(time.monotonic() - t0, 1), "requests": 0, "rps": 0.0,
                     "errors": {}, "fault": "none (after the traffic)"})
        result["after"] = last
        with contextlib.suppress(Exception):
            result["metrics"] = await _metrics(gw.url)


def run(settings: SoakSettings, md_path: Path) -> int:
    shutil.rmtree(SOAK_DIR, ignore_errors=True)
    SOAK_DIR.mkdir(parents=True)
    cache_dir = SOAK_DIR / "cache"
    present = settings.ids - int(settings.ids * settings.missing)
    say(f"pictures: {present} seeded ({settings.seed}) into "
        f"{SOAK_IMAGES.relative_to(REPO_ROOT)} (reused when already there)")
    pictures = images.generate(SOAK_IMAGES, present, settings.seed)
    model = Model(ttl=settings.disk_ttl)
    for p in pictures:
        model.seed(p.image_id, (SOAK_IMAGES / p.image_id).read_bytes())
    model.missing = {f"missing-{i:04d}.{'jpg' if i % 3 else 'png'}"
                     for i in range(settings.ids - present)}
    result: dict[str, Any] = {"samples": [], "started": time.time(),
                              "load_start": os.getloadavg(), "machine": machine(),
                              "soak_env": {k: v for k, v in sorted(os.environ.items())
                                           if k.startswith("SOAK_")}}
    with contextlib.ExitStack() as stack_:
        sampler = RssSampler(interval=0.5)
        stack_.callback(sampler.close)
        say("starting moto S3 (uploading the pictures), the fault proxy, redis-server")
        _s3, bucket, proxy = stack.start_s3(stack_, pictures, SOAK_IMAGES)
        redis = stack.start_redis(stack_)
        env = gateway_env(settings, bucket, proxy, redis, cache_dir)
        result["env"] = env
        say(f"starting the gateway: {settings.workers} workers, memory.max_bytes "
            f"{settings.memory_max_bytes}, disk.max_bytes {settings.disk_max_bytes}, "
            f"disk.ttl {settings.disk_ttl} s")
        gw = stack.start_gateway(stack_, sampler, "gateway-soak", env, settings.workers)
        log_copy = SOAK_DIR / "gateway.log"
        stack_.callback(lambda: log_copy.write_text(gw.process.stderr_text()))
        result["worker_pids_start"] = gw.worker_pids()
        catalogue = fault_catalogue(proxy, redis, settings.read_timeout)
        schedule = FaultSchedule(catalogue, plan_faults(settings, [f.name for f in catalogue]),
                                 settings.recovery)
        stack_.callback(schedule.heal_all)  # runs before the servers are stopped
        asyncio.run(drive(settings, gw, model, bucket, schedule, cache_dir, result))
        result["worker_pids_end"] = gw.worker_pids()
        result["gateway_log"] = gw.process.stderr_text()
        result["peak"] = sampler.unwatch("gateway-soak")
        result["origin_requests"] = proxy.total()
        result["schedule"] = schedule.plan
    result["finished"] = time.time()
    result["load_end"] = os.getloadavg()
    analysis = soak_report.analyse(settings, model, result)
    soak_report.write(md_path, settings, model, result, analysis, argv=sys.argv)
    soak_report.write_raw(SOAK_DIR, settings, result, analysis)
    say(f"wrote {md_path.relative_to(REPO_ROOT) if md_path.is_relative_to(REPO_ROOT) else md_path}"
        f" and {SOAK_DIR.relative_to(REPO_ROOT)}/")
    print(soak_report.summary_text(analysis))
    return 0 if analysis["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak the gateway: mixed traffic with faults injected, correctness "
                    "checked on every answer, memory/fds/disk sampled; writes bench/SOAK.md. "
                    "Settings: SOAK_DURATION, SOAK_QUICK=1, SOAK_RATE, ... "
                    "(bench/soak.py SoakSettings).")
    parser.add_argument("--out", default=str(SOAK_MD),
                        help="where to write the report (default bench/SOAK.md)")
    args = parser.parse_args(argv)
    os.chdir(REPO_ROOT)
    _interrupt_on_sigterm()
    _raise_fd_limit()
    settings = SoakSettings.from_env()
    say(f"settings: {asdict(settings)}")
    try:
        return run(settings, Path(args.out).resolve())
    except KeyboardInterrupt:
        say("interrupted: everything started was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
