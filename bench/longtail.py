"""The long-tail scenario (issue 13) and its check of the capacity model (issue 17).

100,000 distinct pictures (bench/longtail_data.py), a fixed seeded Zipf(1.0)
trace, the gateway with memory.max_bytes ~10 % of the set's bytes and a disk
that holds all of it, behind the shipped deploy/nginx.conf (micro-cache on, as
shipped), beside nginx proxy_cache alone on the same trace. Both are filled
first with every picture the traces ask for (the gateway directly: that pass
also measures the miss path's CPU cost), warmed with one trace file, measured
with another.
The layer shares come from the gateway's own counters (/metrics
gateway_answers_total by layer, read before and after the measured run);
what the gateway did not answer, nginx's micro-cache did. The capacity model
is then run on the same set and rate, analytically and by replaying the very
requests wrk sent, and the three are put side by side.

Origin: the local origin (a folder), not moto S3: uploading 100,000 objects to
moto one PUT at a time takes minutes on 2 cores; the layer shares do not
depend on what the origin is. The proxy_cache anchor fetches from an nginx
serving the same folder.

    python -m bench --only longtail      (4-6 minutes on the shared 2-core test
                                          machine, most of it the fill pass; the
                                          first run ~10 s more for the pictures)
Knobs: BENCH_LONGTAIL_IMAGES (100000), BENCH_LONGTAIL_MEMORY_SHARE (0.10),
BENCH_LONGTAIL_ZIPF (1.0), BENCH_LONGTAIL_WARM (s, 8), BENCH_LONGTAIL_TRACE
(requests per trace file, 400000), BENCH_LONGTAIL=0 leaves it out of `make bench`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench import anchors, longtail_data, stack
from bench.capacity import exact
from bench.capacity.model import LAYERS, Deployment, predict
from bench.capacity.workload import Workload, sample_trace
from bench.procs import RssSampler, session_pids
from bench.results import OUT
from bench.settings import Settings, env_float, env_int
from bench.wrk import WrkResult, run_wrk
from tests.support import free_port
from tests.support.redis_server import RedisServer

DIR = OUT / "longtail"
JSON_OUT = OUT / "longtail.json"
MD_OUT = OUT / "longtail.md"
TOLERANCE_PP = 5.0


@dataclass(frozen=True)
class LongTailSettings:
    enabled: bool
    images: int
    zipf: float
    memory_share: float
    warm: float
    trace: int

    @classmethod
    def from_env(cls) -> LongTailSettings:
        return cls(enabled=env_int("BENCH_LONGTAIL", 1) != 0,
                   images=env_int("BENCH_LONGTAIL_IMAGES", 100_000),
                   zipf=env_float("BENCH_LONGTAIL_ZIPF", 1.0),
                   memory_share=env_float("BENCH_LONGTAIL_MEMORY_SHARE", 0.10),
                   warm=env_float("BENCH_LONGTAIL_WARM", 8.0),
                   trace=env_int("BENCH_LONGTAIL_TRACE", 400_000))


def say(message: str) -> None:
    print(f"[longtail {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def _fetch(base_url: str, uris: list[str], concurrency: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    queue = iter(uris)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def worker() -> None:
            for uri in queue:
                async with http.get(base_url + uri) as resp:
                    await resp.read()
                    seen[resp.headers.get("X-Cache", "-") if resp.status == 200
                         else f"status {resp.status}"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seen


def fetch_in_order(base_url: str, uris: list[str], concurrency: int = 32) -> Counter[str]:
    """GET each URI once, about in order (``concurrency`` at a time)."""
    return asyncio.run(_fetch(base_url, uris, concurrency))


def gateway_answers(url: str) -> Counter[str]:
    """gateway_answers_total by layer, all workers (published every second: the
    caller waits 2.5 s after the load stops so every worker's count is in)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for layer, value in re.findall(r'^gateway_answers_total\{layer="([^"]+)"\} (\S+)$', text,
                                   flags=re.MULTILINE):
        out[layer] += int(float(value))
    return out


def cpu_seconds(sid: int) -> float:
    """User + system CPU time of every live process of session ``sid`` (the
    gateway's supervisor and workers)."""
    total = 0
    for pid in session_pids(sid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (after state: index 11)
    return total / os.sysconf("SC_CLK_TCK")


def _wrk(s: Settings, name: str, url: str, paths: Path, duration: float) -> WrkResult:
    return run_wrk(f"longtail-{name}", url, paths, duration=duration, connections=s.connections,
                   threads=s.threads, mode="rr", out_dir=OUT / "run")


def run(s: Settings, lt: LongTailSettings, outer: contextlib.ExitStack, redis: RedisServer,
        sampler: RssSampler) -> dict[str, Any]:
    started = time.time()
    say(f"pictures: {lt.images} into {DIR.relative_to(OUT.parent.parent)}")
    data = longtail_data.generate(DIR, lt.images, s.seed)
    probs = longtail_data.popularity(lt.images, lt.zipf, s.seed)
    warm_ids = sample_trace(probs, lt.trace, s.seed + 1)
    measure_ids = sample_trace(probs, lt.trace, s.seed + 2)
    warm_file, measure_file = DIR / "trace-warm.txt", DIR / "trace-measure.txt"
    longtail_data.write_paths(warm_file, data.names, warm_ids)
    longtail_data.write_paths(measure_file, data.names, measure_ids)
    total = data.total_bytes
    memory_max = int(total * lt.memory_share)
    disk_max = int(total * 3)  # the whole set, file headers and room to spare
    # Every picture either trace asks for, once, in a seeded order: the others (about a
    # quarter of the set at 100,000, asked for by no request) would change nothing.
    needed = np.union1d(warm_ids, measure_ids)
    fill_order = needed[np.random.default_rng(s.seed + 3).permutation(len(needed))]
    uris = data.uris
    out: dict[str, Any] = {
        "settings": asdict(lt), "images": lt.images, "total_bytes": total,
        "memory_max_bytes": memory_max, "disk_max_bytes": disk_max, "workers": s.workers,
        "filled": len(needed),
        "sizes": {"median": float(np.median(data.sizes)), "min": float(data.sizes.min()),
                  "max": float(data.sizes.max())}}

    run_dir = OUT / "run" / "longtail"
    shutil.rmtree(run_dir, ignore_errors=True)  # a cold gateway: no disk cache of a past run
    with contextlib.ExitStack() as phase:
        static = stack.start_nginx(phase, anchors.static_nginx(
            run_dir / "nginx-static", port=free_port(), root=data.folder, workers=s.workers))
        cache = stack.start_nginx(phase, anchors.s3_cache_nginx(
            run_dir / "nginx-proxy-cache", port=free_port(), s3_port=static.port,
            bucket="images", workers=s.workers))
        env = {"GATEWAY_ORIGIN_KIND": "local", "GATEWAY_ORIGIN_ROOT": str(data.folder),
               "GATEWAY_CLUSTER_SECRET": "longtail-bench-" + "0" * 32,
               "GATEWAY_REDIS_URL": redis.url, "GATEWAY_SERVER_WORKERS": str(s.workers),
               "GATEWAY_SERVER_ACCESS_LOG": "false", "GATEWAY_LOG_LEVEL": "INFO",
               "GATEWAY_MEMORY_MAX_BYTES": str(memory_max),
               "GATEWAY_DISK_MAX_BYTES": str(disk_max),
               "GATEWAY_DISK_PATH": str(run_dir / "gateway-cache")}
        say(f"gateway: {s.workers} workers, memory.max_bytes {memory_max:,} "
            f"({100 * lt.memory_share:g} % of {total:,} bytes), disk.max_bytes {disk_max:,}")
        gw = stack.start_gateway(phase, sampler, "gateway-longtail", env, s.workers)
        t0, cpu0 = time.perf_counter(), cpu_seconds(gw.process.pid)
        filled = fetch_in_order(gw.url, [uris[i] for i in fill_order.tolist()], 64)
        fill_s, cpu = time.perf_counter() - t0, cpu_seconds(gw.process.pid) - cpu0
        out["fill"] = dict(filled)
        out["fill_s"] = fill_s
        out["fill_cpu_s"] = cpu
        # Per worker = per core busy: the fill does not keep both workers busy (it
        # waits on disk writes and Redis), so its wall-clock rate would undersell one.
        out["fill_rps_per_worker"] = len(needed) / max(cpu, 1e-9)
        say(f"  filled {len(needed):,} in {fill_s:.0f} s ({len(needed) / fill_s:,.0f} misses/s, "
            f"gateway CPU {cpu:.0f} s: {len(needed) / max(cpu, 1e-9):,.0f} misses per "
            f"CPU-second): {dict(filled)}")
        edge = stack.start_nginx(phase, anchors.shipped_nginx(
            run_dir / "nginx-shipped", port=free_port(), upstream=f"127.0.0.1:{gw.port}",
            workers=s.workers, micro_cache=True, access_log=s.nginx_access_log))
        warm = _wrk(s, "gateway-warm", edge.url, warm_file, lt.warm)
        time.sleep(2.5)
        before = gateway_answers(gw.url)
        measured = _wrk(s, "gateway", edge.url, measure_file, s.duration)
        time.sleep(2.5)
        after = gateway_answers(gw.url)
        delta = {k: after[k] - before[k] for k in after if after[k] - before[k]}
        say(f"  shipped nginx -> gateway: {measured.rps:,.0f} req/s, p50 "
            f"{measured.p50_ms:.2f} ms, p99 {measured.p99_ms:.2f} ms; gateway answers {delta}")
        out["gateway"] = measured.as_dict()
        out["gateway_warm"] = warm.as_dict()
        out["gateway_answers"] = delta
        out["memory_rss"] = vars(sampler.unwatch("gateway-longtail"))

        t0 = time.perf_counter()
        out["proxy_cache_fill"] = dict(fetch_in_order(
            cache.url, [uris[i] for i in needed.tolist()], 64))
        out["proxy_cache_fill_s"] = time.perf_counter() - t0
        _wrk(s, "proxy-cache-warm", cache.url, warm_file, lt.warm)
        anchor = _wrk(s, "proxy-cache", cache.url, measure_file, s.duration)
        say(f"  nginx proxy_cache alone: {anchor.rps:,.0f} req/s, p50 {anchor.p50_ms:.2f} ms, "
            f"p99 {anchor.p99_ms:.2f} ms")
        out["proxy_cache"] = anchor.as_dict()
    # ~200,000 cache files (gateway disk, proxy_cache) that nothing reads again: gone
    # now rather than slowing the next run's clean-up of bench/out/run
    shutil.rmtree(run_dir, ignore_errors=True)

    out["measured"] = measured_shares(measured.requests, delta)
    wl = Workload(data.sizes, probs, uris)
    d = Deployment(replicas=1, workers=s.workers, memory_max_bytes=memory_max,
                   disk_max_bytes=disk_max, micro_ttl=1.0, url_ttl=0.0)
    out["model"] = predict(wl, measured.rps, d).shares
    warm_part = longtail_data.wrk_segments(warm_ids, warm.requests, s.threads)
    measure_part = longtail_data.wrk_segments(measure_ids, measured.requests, s.threads)
    replay = exact.simulate(wl, np.concatenate([warm_part, measure_part]), d,
                            rate=measured.rps, measure_from=len(warm_part),
                            direct=fill_order.tolist(), seed=s.seed)
    out["exact"] = replay.shares()
    out["took_s"] = time.time() - started
    return out


def measured_shares(requests: int, answers: dict[str, int]) -> dict[str, float]:
    """Layer shares of the client requests: the gateway's answers by layer, the
    rest answered by nginx's micro-cache."""
    total = max(1, requests)
    gateway = sum(answers.values())
    shares = {layer: 0.0 for layer in LAYERS}
    shares["micro"] = max(0, requests - gateway) / total
    for layer, count in answers.items():
        key = layer if layer in shares else "miss"  # coalesced, stale...: an origin fetch
        shares[key] += count / total
    return shares


def section(lt: dict[str, Any]) -> list[str]:
    """The long-tail section of bench/RESULTS.md."""
    gw, anchor = lt["gateway"], lt["proxy_cache"]
    lines = [
        "## Long tail (issue 13) and the capacity model (issue 17)",
        "",
        f"{lt['images']:,} distinct pictures ({lt['total_bytes'] / 1e6:,.0f} MB; sizes "
        f"log-normal, median {lt['sizes']['median'] / 1000:.1f} kB, "
        f"{lt['sizes']['min'] / 1000:.1f}-{lt['sizes']['max'] / 1000:.1f} kB), requested "
        f"with Zipf(s = {lt['settings']['zipf']:g}) popularity from a fixed seeded trace "
        f"(bench/longtail_data.py); gateway memory.max_bytes {lt['memory_max_bytes']:,} "
        f"({100 * lt['settings']['memory_share']:g} % of the bytes, {lt['workers']} workers), "
        f"disk.max_bytes {lt['disk_max_bytes']:,} (all of it); local origin. Both servers "
        f"got every picture the traces ask for ({lt.get('filled', lt['images']):,}) once "
        f"first (the gateway's fill pass: "
        f"{lt['fill_rps_per_worker']:,.0f} misses per gateway CPU-second), then "
        f"{lt['settings']['warm']:g} s of one trace file, then the measured run on another.",
        "",
        "| server | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, w in (("shipped nginx (micro-cache) -> gateway", gw),
                    ("nginx proxy_cache alone", anchor)):
        errors = sum(w["errors"].values())
        lines.append(f"| {name} | {w['rps']:,.0f} | {w['latency_us']['p50'] / 1000:.2f} | "
                     f"{w['latency_us']['p99'] / 1000:.2f} | {errors} |")
    lines += [
        "",
        "Who answered the measured requests: measured from the gateway's "
        "`gateway_answers_total` by layer (before/after; the rest is nginx's micro-cache), "
        "predicted by `python -m bench.capacity`'s analytic model (Che approximation, "
        "steady state, at the measured rate) and by its exact simulator replaying the "
        "requests wrk sent (fill pass, warm-up and measured run):",
        "",
        "| layer | measured | model (Che) | exact replay | model - measured |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    worst = 0.0
    for layer in LAYERS:
        m, p, e = (100 * lt[k][layer] for k in ("measured", "model", "exact"))
        if max(m, p, e) == 0:
            continue
        worst = max(worst, abs(p - m))
        lines.append(f"| {layer} | {m:.1f} % | {p:.1f} % | {e:.1f} % | {p - m:+.1f} pp |")
    verdict = ("within" if worst <= TOLERANCE_PP else "**outside**")
    lines += ["", f"Largest difference {worst:.1f} percentage points: {verdict} the "
              f"{TOLERANCE_PP:g} pp the model is held to.", ""]
    return lines


def run_alone(s: Settings) -> int:
    lt = LongTailSettings.from_env()
    with contextlib.ExitStack() as outer:
        sampler = RssSampler()
        outer.callback(sampler.close)
        redis = stack.start_redis(outer)
        result = run(s, lt, outer, redis, sampler)
    save(result)
    print("\n".join(section(result)))
    return 0


def save(result: dict[str, Any]) -> None:
    JSON_OUT.write_text(json.dumps(result, indent=1, default=str))
    MD_OUT.write_text("\n".join(section(result)) + "\n")
