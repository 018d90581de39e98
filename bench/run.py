"""The benchmark run: build the stack, fill the caches, run every scenario,
write bench/RESULTS.md (or, with --profile, flame graphs under bench/out/)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from bench import (
    anchors,
    browser_headline,
    browser_layers,
    client,
    images,
    longtail,
    report,
    stack,
    thumbor_peer,
)
from bench.burst import run_burst
from bench.images import Picture
from bench.procs import RssSampler
from bench.results import (
    IMAGES_DIR,
    OUT,
    PATHS_FILE,
    REPO_ROOT,
    RESULTS_MD,
    RUN_DIR,
    Measure,
    Results,
)
from bench.settings import Settings
from bench.wrk import WrkResult, run_wrk
from tests.support import free_port
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Bucket


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------


def _interrupt_on_sigterm() -> None:
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, raise_interrupt)
    # also when started in the background (where a shell leaves SIGINT ignored)
    signal.signal(signal.SIGINT, raise_interrupt)


def _raise_fd_limit() -> None:
    # 1,000 burst connections on both ends, plus wrk's and nginx's: use the hard limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _prepare(settings: Settings) -> list[Picture]:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    say(f"pictures: {settings.images} seeded ({settings.seed}) into "
        f"{IMAGES_DIR.relative_to(REPO_ROOT)}")
    pictures = images.generate(IMAGES_DIR, settings.images, settings.seed)
    PATHS_FILE.write_text("".join(f"/images/{p.image_id}\n" for p in pictures))
    return pictures


def gateway_env(settings: Settings, bucket: S3Bucket, proxy: FaultProxy, redis: RedisServer,
                name: str, memory_max_bytes: int) -> dict[str, str]:
    return {
        **bucket.env(proxy.url),
        "AWS_EC2_METADATA_DISABLED": "true",
        "GATEWAY_REDIS_URL": redis.url,
        "GATEWAY_SERVER_WORKERS": str(settings.workers),
        "GATEWAY_SERVER_ACCESS_LOG": "false",
        "GATEWAY_MEMORY_MAX_BYTES": str(memory_max_bytes),
        "GATEWAY_DISK_PATH": str(RUN_DIR / name / "cache"),
        "GATEWAY_LOG_LEVEL": "INFO",
    }


#: wrk for the one-process peers (the issue's method): 1 thread x 32 connections, so
#: that wrk and the one server process have a core each; a second wrk thread would
#: take the core the server needs, and more from the server that needs more CPU.
ONE_PROCESS_LOAD = (1, 32)


class Runner:
    def __init__(self, settings: Settings, paths: list[str], results: Results) -> None:
        self.s = settings
        self.paths = paths
        self.results = results

    def wrk(self, name: str, url: str, duration: float,
            paths_file: Path = PATHS_FILE, load: tuple[int, int] | None = None) -> WrkResult:
        threads, connections = load or (self.s.threads, self.s.connections)
        return run_wrk(name, url, paths_file, duration=duration, connections=connections,
                       threads=threads, mode=self.s.mode, out_dir=RUN_DIR)

    def warm(self, name: str, url: str, paths_file: Path = PATHS_FILE,
             load: tuple[int, int] | None = None) -> None:
        if self.s.warm > 0:
            self.wrk(f"{name}-warm", url, self.s.warm, paths_file, load)

    def measure_paths(self, key: str, title: str, server: str, url: str, paths: list[str],
                      headers: tuple[str, ...] | None = ("X-Cache",),
                      load: tuple[int, int] | None = None) -> Measure:
        """``measure`` over other paths than the picture set's /images/{id} (a variant,
        another server's URL scheme)."""
        paths_file = RUN_DIR / f"paths-{key}.txt"
        paths_file.write_text("".join(f"{p}\n" for p in paths))
        return self.measure(key, title, server, url, headers, paths=paths,
                            paths_file=paths_file, load=load)

    def measure(self, key: str, title: str, server: str, url: str,
                headers: tuple[str, ...] | None = ("X-Cache",),
                origin: FaultProxy | None = None, paths: list[str] | None = None,
                paths_file: Path = PATHS_FILE, load: tuple[int, int] | None = None
                ) -> Measure:
        """One wrk run of a scenario (warmed up the first time); with BENCH_ROUNDS > 1
        it is called once per round and the runs add up in one Measure. ``load``:
        (wrk threads, connections) when not the run's own."""
        paths = self.paths if paths is None else paths
        measure = self.results.measures.get(key)
        if measure is None:
            self.warm(key, url, paths_file, load)
        before = client.describe(client.sample_layers(url, paths, 200, headers)) \
            if headers else ""
        round_no = "" if measure is None else f" (round {len(measure.runs) + 1})"
        threads, connections = load or (self.s.threads, self.s.connections)
        say(f"{title}{round_no}: wrk {self.s.duration:g} s, {threads} thread(s) x "
            f"{connections} connections")
        gets_before = origin.gets() if origin is not None else 0
        name = key if measure is None else f"{key}-{len(measure.runs) + 1}"
        result = self.wrk(name, url, self.s.duration, paths_file, load)
        gets = origin.gets() - gets_before if origin is not None else None
        after = client.describe(client.sample_layers(url, paths, 200, headers)) \
            if headers else ""
        if measure is None:
            measure = Measure(key, title, server, [result], before, after, gets)
            self.results.measures[key] = measure
        else:
            measure.runs.append(result)
            measure.layers_after = after
            if gets is not None:
                measure.origin_gets = (measure.origin_gets or 0) + gets
        errors = f", errors {result.errors}" if result.socket_errors or result.non_2xx else ""
        say(f"  {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms{errors}" + (f"; layers: {after}" if after else ""))
        return measure


#: The scenario groups of a run, in order; ``python -m bench --only a,b`` runs some.
SCENARIOS = ("memory", "disk", "thumbor", "browser", "longtail")


def _phase(name: str, only: frozenset[str]) -> Iterator[contextlib.ExitStack]:
    """Once (a loop of one) if ``name`` was asked for, with a fresh ExitStack that
    stops the phase's servers when the loop body ends or raises; else not at all."""
    if name in only:
        with contextlib.ExitStack() as phase:
            yield phase


def run(settings: Settings, only: frozenset[str] = frozenset(SCENARIOS)) -> Results:
    pictures = _prepare(settings)
    paths = [f"/images/{p.image_id}" for p in pictures]
    results = Results(settings, images.summary(pictures), started=time.time(),
                      load_start=os.getloadavg(),
                      bench_env={k: v for k, v in sorted(os.environ.items())
                                 if k.startswith("BENCH_")})
    workers = settings.workers
    runner = Runner(settings, paths, results)
    with contextlib.ExitStack() as outer:
        sampler = RssSampler()
        outer.callback(sampler.close)
        say("starting moto S3 (uploading the pictures), the counting proxy, redis-server")
        s3, bucket, proxy = stack.start_s3(outer, pictures, IMAGES_DIR)
        redis = stack.start_redis(outer)

        say("starting nginx anchors (static files, proxy_cache in front of S3) "
            "and the bare aiohttp reference")
        static = stack.start_nginx(outer, anchors.static_nginx(
            RUN_DIR / "nginx-static", port=free_port(), root=IMAGES_DIR, workers=workers))
        s3cache = stack.start_nginx(outer, anchors.s3_cache_nginx(
            RUN_DIR / "nginx-s3-cache", port=free_port(), s3_port=s3.port, bucket=stack.BUCKET,
            workers=workers))
        results.nginx_confs["static"] = static.conf_text
        results.nginx_confs["s3-cache"] = s3cache.conf_text
        bare_url, _bare = stack.start_bare_aiohttp(outer, RUN_DIR, IMAGES_DIR, workers)
        for name, url in (("nginx static", static.url), ("nginx proxy_cache", s3cache.url),
                          ("bare aiohttp", bare_url)):
            seen = client.fetch_all(url, pictures)
            if set(seen) - {"-", "MISS", "HIT", "EXPIRED"}:
                raise RuntimeError(f"{name} did not serve the pictures right: {seen}")

        # ---- gateway with a large LRU ---------------------------------------------
        for phase in _phase("memory", only):
            name = "gateway-memory"
            env = gateway_env(settings, bucket, proxy, redis, name, settings.memory_max_bytes)
            results.gateway_env[name] = env
            results.memory_limits[name] = settings.memory_max_bytes
            say(f"starting {name}: {workers} workers, memory.max_bytes "
                f"{settings.memory_max_bytes}, access log off")
            gw = stack.start_gateway(phase, sampler, name, env, workers)
            proxy.reset()
            first = client.fetch_all(gw.url, pictures)
            results.first_pass = client.describe(first)
            results.warm_origin_gets = proxy.gets()
            say(f"  first pass (origin fetches): {results.first_pass}; "
                f"origin GETs {results.warm_origin_gets}")
            _check_served(first, "gateway first pass", {"MISS", "COALESCED", "HIT-MEMORY",
                                                        "HIT-DISK"})

            edge_micro = stack.start_nginx(phase, anchors.shipped_nginx(
                RUN_DIR / "nginx-shipped-micro", port=free_port(), upstream=f"127.0.0.1:{gw.port}",
                workers=workers, micro_cache=True, access_log=settings.nginx_access_log))
            edge_plain = stack.start_nginx(phase, anchors.shipped_nginx(
                RUN_DIR / "nginx-shipped-plain", port=free_port(), upstream=f"127.0.0.1:{gw.port}",
                workers=workers, micro_cache=False, access_log=settings.nginx_access_log))
            results.nginx_confs["shipped (micro-cache)"] = edge_micro.conf_text

            edge_headers = ("X-Micro-Cache", "X-Cache")
            for _ in range(settings.rounds):  # anchors and subjects interleaved per round
                runner.measure("proxy_cache", "nginx proxy_cache -> S3 (anchor)",
                               "nginx", s3cache.url)
                runner.measure("memory", "gateway, memory hits", "gateway", gw.url,
                               origin=proxy)
                runner.measure("bare", "bare aiohttp handler (reference)", "aiohttp",
                               bare_url, headers=None)
                runner.measure("edge_micro", "nginx (shipped, micro-cache) -> gateway",
                               "nginx + gateway", edge_micro.url, edge_headers, proxy)
                runner.measure("edge_plain", "nginx (shipped, no micro-cache) -> gateway",
                               "nginx + gateway", edge_plain.url, edge_headers, proxy)
                runner.measure("proxy_cache_2", "nginx proxy_cache -> S3 (anchor, again)",
                               "nginx", s3cache.url)
            # Issue 18: named variants and placeholders, cached (bench/browser_layers.py).
            say("presets and placeholders: first pass renders them, then wrk")
            browser_layers.measure(runner, gw.url, pictures, proxy)

            # ---- cold burst -------------------------------------------------------
            fmt, data = images.make_picture(settings.images + 1, settings.seed)
            key = f"burst-new.{fmt}"
            bucket.put(key, data, content_type=images.CONTENT_TYPES[fmt], ACL="public-read")
            proxy.reset()
            if settings.burst_origin_delay > 0:
                proxy.delay_first_byte(settings.burst_origin_delay, match=key)
            say(f"cold burst: {settings.burst} concurrent GETs of new {key} "
                f"(origin first byte delayed {settings.burst_origin_delay:g} s)")
            burst = run_burst("127.0.0.1", gw.port, f"/images/{key}", settings.burst)
            proxy.heal()
            results.burst = burst
            results.burst_key = key
            results.burst_origin_gets = proxy.gets(key)
            results.burst_origin_requests = sum(1 for r in proxy.requests() if key in r.path)
            say(f"  origin GETs {results.burst_origin_gets}; statuses {dict(burst.statuses)}; "
                f"layers {dict(burst.layers)}; errors {dict(burst.errors)}; "
                f"p99 {burst.percentile(99):.0f} ms")
            results.memory[name] = sampler.unwatch(name)

        # ---- gateway with an LRU too small for the set --------------------------
        for phase in _phase("disk", only):
            name = "gateway-disk"
            env = gateway_env(settings, bucket, proxy, redis, name,
                              settings.disk_memory_max_bytes)
            results.gateway_env[name] = env
            results.memory_limits[name] = settings.disk_memory_max_bytes
            say(f"starting {name}: memory.max_bytes {settings.disk_memory_max_bytes}")
            gw = stack.start_gateway(phase, sampler, name, env, workers)
            first = client.fetch_all(gw.url, pictures)
            _check_served(first, "gateway-disk first pass", {"MISS", "COALESCED",
                                                             "HIT-MEMORY", "HIT-DISK"})
            for _ in range(settings.rounds):
                runner.measure("static", "nginx static files (anchor)", "nginx", static.url,
                               headers=None)
                runner.measure("disk", "gateway, disk hits (LRU too small)", "gateway",
                               gw.url, origin=proxy)
            results.memory[name] = sampler.unwatch(name)
        for phase in _phase("thumbor", only):
            results.peers = thumbor_peer.PeersPhase(
                say, lambda key, title, server, url, paths, headers=("X-Cache",):
                runner.measure_paths(key, title, server, url, paths, headers,
                                     ONE_PROCESS_LOAD),
                lambda stack_, name: _one_worker_gateway(
                    stack_, sampler, settings, bucket, proxy, redis, name)).run(phase, pictures)
        for phase in _phase("browser", only):
            results.browser = browser_headline.run_headline(
                phase, say, settings, pictures, proxy,
                lambda stack_, name, extra: _browser_gateway(
                    stack_, sampler, settings, bucket, proxy, redis, name, extra))
        # Before the long tail: its own fill and clean-up of 2 GB keep both cores busy
        # for minutes, and the "machine was busy" note must judge other work, not that.
        results.load_end = os.getloadavg()
        for phase in _phase("longtail", only):
            lt = longtail.LongTailSettings.from_env()
            if lt.enabled:
                results.longtail = longtail.run(settings, lt, phase, redis, sampler)
                longtail.save(results.longtail)
    results.finished = time.time()
    return results


def _one_worker_gateway(phase: contextlib.ExitStack, sampler: RssSampler, settings: Settings,
                        bucket: S3Bucket, proxy: FaultProxy, redis: RedisServer, name: str
                        ) -> tuple[str, int]:
    env = gateway_env(settings, bucket, proxy, redis, name, settings.memory_max_bytes)
    env["GATEWAY_SERVER_WORKERS"] = "1"
    gw = stack.start_gateway(phase, sampler, name, env, 1)
    return gw.url, gw.process.pid


def _browser_gateway(phase: contextlib.ExitStack, sampler: RssSampler, settings: Settings,
                     bucket: S3Bucket, proxy: FaultProxy, redis: RedisServer, name: str,
                     extra: dict[str, str]) -> stack.Gateway:
    env = gateway_env(settings, bucket, proxy, redis, name, settings.memory_max_bytes)
    env.update(extra)
    return stack.start_gateway(phase, sampler, name, env, settings.workers)


def _check_served(seen: Counter[str], what: str, allowed: set[str]) -> None:
    wrong = {k: v for k, v in seen.items() if k not in allowed}
    if wrong:
        raise RuntimeError(f"{what}: unexpected answers {wrong} (all: {dict(seen)})")


# ---- profile mode -------------------------------------------------------------------


def _py_spy() -> str:
    candidate = Path(sys.executable).parent / "py-spy"
    found = str(candidate) if candidate.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: `make bench` installs it into the venv "
                           "(or: .venv/bin/pip install py-spy)")
    return found


QUEUE_WAIT = "_worker (concurrent/futures/thread.py:81)"  # an executor thread, parked


def _summarize_raw(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed)
    output, separately for the event-loop thread and the executor threads."""
    groups: dict[str, tuple[Counter[str], Counter[str]]] = {
        "event-loop thread": (Counter(), Counter()),
        "executor threads (parked in queue.get left out)": (Counter(), Counter()),
    }
    totals: Counter[str] = Counter()
    parked = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.strip().split(";")
        if frames[-1].strip() == QUEUE_WAIT:
            parked += count
            continue
        group = ("event-loop thread" if any("uvloop" in f or "asyncio/runners.py" in f
                                            for f in frames)
                 else "executor threads (parked in queue.get left out)")
        self_counts, incl_counts = groups[group]
        totals[group] += count
        self_counts[frames[-1].strip()] += count
        for function in {re.sub(r":\d+\)$", ")", f.strip()) for f in frames}:
            incl_counts[function] += count
    lines = [f"py-spy raw samples at 200 Hz; {parked} samples of executor threads parked "
             "in queue.get left out. Shares are of each group's own samples."]
    for group, (self_counts, incl_counts) in groups.items():
        total = totals[group]
        lines += ["", f"== {group}: {total} samples"]
        if not total:
            continue
        lines.append("self time (where the CPU is):")
        lines += [f"  {100 * c / total:5.1f} %  {f}" for f, c in self_counts.most_common(top)]
        lines.append("inclusive, per function (anywhere on the stack):")
        lines += [f"  {100 * c / total:5.1f} %  {f}" for f, c in incl_counts.most_common(top)]
    return "\n".join(lines) + "\n"


def _profiled_wrk(runner: Runner, key: str, url: str, pids: list[int], duration: float,
                  native: bool) -> list[Path]:
    spy = _py_spy()
    outputs: list[Path] = []
    procs = []
    for i, pid in enumerate(pids[:2]):
        # Worker 1: a flame graph of the samples that hold the GIL, i.e. Python's CPU
        # time (py-spy's idle detection misses the executor threads parked in
        # queue.get here, which would fill most of the graph otherwise). Worker 2 (if
        # any): every sample as collapsed stacks, summarized per thread kind below,
        # so time in executor threads without the GIL (pread, sha256) shows too.
        if i == 0:
            fmt, out, extra = "flamegraph", OUT / f"profile-{key}.svg", ["--gil"]
        else:
            fmt, out, extra = "raw", OUT / f"profile-{key}-raw.txt", []
        argv = [spy, "record", "-p", str(pid), "-d", str(int(duration) + 1), "-r", "200",
                "-f", fmt, "-o", str(out), *extra] + (["--native"] if native else [])
        with open(RUN_DIR / f"py-spy-{key}-{i}.log", "wb") as log:
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log))
        outputs.append(out)
    try:
        time.sleep(0.5)
        result = runner.wrk(f"{key}-profiled", url, duration)
        say(f"  profiled: {result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms "
            "(slowed by sampling)")
        for proc in procs:
            proc.wait(duration + 30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    summaries = []
    for out in outputs:
        if out.name.endswith("-raw.txt") and out.exists():
            summary = out.with_name(out.name.replace("-raw.txt", "-top.txt"))
            summary.write_text(_summarize_raw(out))
            summaries.append(summary)
    return outputs + summaries


def profile(settings: Settings, native: bool) -> None:
    pictures = _prepare(settings)
    paths = [f"/images/{p.image_id}" for p in pictures]
    results = Results(settings, images.summary(pictures), started=time.time())
    runner = Runner(settings, paths, results)
    written: list[Path] = []
    with contextlib.ExitStack() as outer:
        sampler = RssSampler()
        outer.callback(sampler.close)
        say("starting moto S3, proxy, redis-server")
        _s3, bucket, proxy = stack.start_s3(outer, pictures, IMAGES_DIR)
        redis = stack.start_redis(outer)
        for name, memory_max, key in (
                ("gateway-memory", settings.memory_max_bytes, "memory-hits"),
                ("gateway-disk", settings.disk_memory_max_bytes, "disk-hits")):
            with contextlib.ExitStack() as phase:
                env = gateway_env(settings, bucket, proxy, redis, name, memory_max)
                gw = stack.start_gateway(phase, sampler, name, env, settings.workers)
                client.fetch_all(gw.url, pictures)
                runner.warm(key, gw.url)
                say(f"{key}: layers {client.describe(client.sample_layers(gw.url, paths))}")
                say(f"{key}: py-spy on workers {gw.worker_pids()[:2]} for "
                    f"{settings.duration:g} s")
                written += _profiled_wrk(runner, key, gw.url, gw.worker_pids(),
                                         settings.duration, native)
    for path in written:
        if path.exists():
            say(f"wrote {path.relative_to(REPO_ROOT)}")
    for path in written:
        if path.name.endswith("-top.txt"):
            print(path.read_text())


# ---- entry point --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the gateway against nginx anchors; writes bench/RESULTS.md. "
                    "Settings: BENCH_DURATION, BENCH_QUICK=1, ... (see bench/settings.py).")
    parser.add_argument("--profile", action="store_true",
                        help="instead: py-spy flame graphs of one worker during the memory-hit "
                             "and disk-hit scenarios, into bench/out/")
    parser.add_argument("--native", action="store_true",
                        help="with --profile: include native (C) frames")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated scenario groups to run, of "
                             f"{', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--results", default=str(RESULTS_MD),
                        help="where to write the results (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    os.chdir(REPO_ROOT)
    _interrupt_on_sigterm()
    _raise_fd_limit()
    settings = Settings.from_env()
    only = frozenset(name.strip() for name in args.only.split(",") if name.strip())
    if not only or only - set(SCENARIOS):
        parser.error(f"--only: choose among {', '.join(SCENARIOS)}")
    try:
        if args.profile:
            profile(settings, args.native)
            return 0
        if only == frozenset({"longtail"}):  # alone: bench/out/longtail.{json,md}
            return longtail.run_alone(settings)
        results = run(settings, only)
    except KeyboardInterrupt:
        say("interrupted: everything started was stopped")
        return 130
    path = Path(args.results)
    report.write(path, results, argv=sys.argv)
    (OUT / "results.json").write_text(json.dumps(report.as_json(results), indent=1))
    say(f"wrote {path}")
    print(report.summary_text(results))
    return 0
