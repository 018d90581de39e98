"""``python -m bench.capacity``: the command line of the capacity model."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.capacity import exact, workload
from bench.capacity.model import Deployment, Prediction, Throughput, predict
from bench.capacity.throughput import from_bench

_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
          "gb": 1000**3, "gib": 1024**3, "tb": 1000**4, "tib": 1024**4}
MONTH_S = 30 * 86400


def size(text: str) -> float:
    """A byte count: 256MiB, 10GB, 1e6 (no unit: bytes)."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 10GB)")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description="Capacity model of nginx + image-gateway replicas + S3 + Redis "
                    "(a simulation, not a load test). See docs/CAPACITY.md.")
    w = p.add_argument_group("workload")
    w.add_argument("--objects", type=float, default=1e6, help="distinct images (default 1e6)")
    w.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s (0: uniform)")
    w.add_argument("--trace", type=Path, help="a trace file (one id or /images/ path a line) "
                   "instead of --objects/--zipf: popularity = each id's share")
    w.add_argument("--size-median", type=size, default=size("15kB"))
    w.add_argument("--size-sigma", type=float, default=0.5, help="log-normal sigma of sizes")
    w.add_argument("--size-min", type=size, default=size("2kB"))
    w.add_argument("--size-max", type=size, default=size("200kB"))
    w.add_argument("--rate", type=float, default=1000.0, help="client requests per second")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--modelled", type=float, default=2e6,
                   help="largest number of objects modelled one by one (default 2e6); a "
                        "bigger set is modelled by its most popular half of that and a "
                        "random sample of the rest, each standing for its share")
    d = p.add_argument_group("deployment")
    d.add_argument("--cdn-hit", type=float, default=0.0,
                   help="share of requests a CDN / browser caches answer (0: none)")
    d.add_argument("--edges", type=int, default=1, help="nginx instances")
    d.add_argument("--micro-ttl", type=float, default=1.0, help="nginx micro-cache s (0: off)")
    d.add_argument("--replicas", type=int, default=2)
    d.add_argument("--workers", type=int, default=1, help="server.workers per replica")
    d.add_argument("--memory-max-bytes", type=size, default=size("256MiB"),
                   help="memory.max_bytes per replica")
    d.add_argument("--memory-max-object-bytes", type=size, default=size("8MiB"))
    d.add_argument("--disk-max-bytes", type=size, default=size("10GiB"),
                   help="disk.max_bytes per replica")
    d.add_argument("--disk-ttl", type=float, default=604800.0, help="disk.ttl s")
    d.add_argument("--purge-rate", type=float, default=0.0, help="purges per second")
    d.add_argument("--url-ttl", type=float, default=3000.0,
                   help="presign.cache_ttl s (0: local origin, no URL store)")
    t = p.add_argument_group("per-worker throughput (default: the latest make bench)")
    t.add_argument("--memory-rps", type=float)
    t.add_argument("--disk-rps", type=float)
    t.add_argument("--miss-rps", type=float)
    m = p.add_argument_group("method")
    m.add_argument("--exact", type=float, metavar="REQUESTS", default=0,
                   help="also replay a sampled trace of this many requests through the exact "
                        "simulator (its first half warms the caches)")
    m.add_argument("--json", action="store_true", help="JSON instead of text")
    return p


def build_workload(args: argparse.Namespace) -> workload.Workload:
    if args.trace is None and args.objects > args.modelled:
        half = int(args.modelled // 2)
        return workload.sampled_synthetic(
            int(args.objects), args.zipf, head=half, tail=half, median=args.size_median,
            sigma=args.size_sigma, lo=args.size_min, hi=args.size_max, seed=args.seed)
    if args.trace is not None:
        ids, uris = workload.read_trace(args.trace)
        sizes = workload.lognormal_sizes(len(uris), args.size_median, args.size_sigma,
                                         args.size_min, args.size_max, args.seed)
        return workload.from_trace(ids, sizes, uris)
    return workload.synthetic(int(args.objects), args.zipf, median=args.size_median,
                              sigma=args.size_sigma, lo=args.size_min, hi=args.size_max,
                              seed=args.seed)


def deployment(args: argparse.Namespace) -> Deployment:
    return Deployment(
        replicas=args.replicas, workers=args.workers, memory_max_bytes=args.memory_max_bytes,
        memory_max_object_bytes=args.memory_max_object_bytes,
        disk_max_bytes=args.disk_max_bytes, disk_ttl=args.disk_ttl, micro_ttl=args.micro_ttl,
        edges=args.edges, cdn_hit=args.cdn_hit, purge_rate=args.purge_rate,
        url_ttl=args.url_ttl)


def throughput(args: argparse.Namespace) -> Throughput:
    bench = from_bench()
    overridden = any(v is not None for v in (args.memory_rps, args.disk_rps, args.miss_rps))
    return Throughput(
        memory=args.memory_rps or bench.memory, disk=args.disk_rps or bench.disk,
        miss=args.miss_rps or bench.miss,
        source=bench.source + (" (some overridden on the command line)" if overridden else ""))


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:,.2f} {prefix}{unit}"
    return f"{value:,.2f} {unit}".rstrip()


def _after(seconds: float) -> str:
    for unit, size_s in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size_s:
            return f"{seconds / size_s:g} {unit}"
    return f"{seconds:g} s"


def render(p: Prediction, wl: workload.Workload, d: Deployment, tp: Throughput,
           replay: exact.Replay | None, seconds: float) -> str:
    head = 0 if wl.weights is None else int((wl.weights == 1).sum())
    sampled = (f" (modelled: the {head:,} most popular and a random sample of the rest, "
               f"{wl.modelled:,} in all)" if wl.weights is not None else "")
    lines = [f"objects {wl.objects:,}{sampled}, {_si(wl.total_bytes, 'B')} in all; "
             f"{p.rate:,.0f} requests/s; {d.replicas} replicas x {d.workers} workers, "
             f"memory.max_bytes {_si(d.memory_max_bytes, 'B')}, disk.max_bytes "
             f"{_si(d.disk_max_bytes, 'B')} per replica; micro-cache {d.micro_ttl:g} s, "
             f"CDN hit {d.cdn_hit:g}, purges {d.purge_rate:g}/s",
             "", "layer shares (of client requests):" + ("   model   exact" if replay else "")]
    exact_shares = replay.shares() if replay else {}
    for layer, share in p.shares.items():
        extra = f"  {100 * exact_shares[layer]:6.2f} %" if replay else ""
        lines.append(f"  {layer:<12} {100 * share:6.2f} %{extra}")
    lines += [
        "",
        f"origin GETs     {p.origin_gets:,.2f}/s  ({_si(p.origin_gets * MONTH_S)} per 30 days)",
        f"origin egress   {_si(p.origin_bytes, 'B')}/s  "
        f"({_si(p.origin_bytes * MONTH_S, 'B')} per 30 days)",
        f"served to users {_si(p.served_bytes, 'B')}/s",
        f"Redis           {p.redis_total:,.2f} ops/s: "
        + ", ".join(f"{k} {v:,.2f}" for k, v in p.redis.items()),
        "per replica     requests/s " + ", ".join(f"{r:,.0f}" for r in p.replica_rates),
        "  memory held   " + ", ".join(_si(b, "B") for b in p.memory_used),
        "  disk held     " + ", ".join(_si(b, "B") for b in p.disk_used),
    ]
    if p.resync:
        lines.append("after a resync (every copy untrusted, each revalidated on its next "
                     "request): origin GETs/s, Redis ops/s")
        lines.append("  " + "; ".join(f"{_after(t)}: {gets:,.0f}, {ops:,.0f}"
                                      for t, (gets, ops) in p.resync.items()))
    if p.cores is not None:
        lines.append(f"gateway cores   {p.cores:,.2f} (per-worker req/s: memory {tp.memory:,.0f}, "
                     f"disk {tp.disk:,.0f}, origin fetch {tp.miss:,.0f}; from {tp.source})")
    lines.append(f"(model solved in {seconds:.2f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    wl = build_workload(args)
    d = deployment(args)
    tp = throughput(args)
    pred = predict(wl, args.rate, d, tp)
    seconds = time.perf_counter() - started
    replay = None
    if args.exact and wl.weights is not None:
        raise SystemExit("--exact replays every object: use it on sets up to --modelled")
    if args.exact:
        n = int(args.exact)
        ids = workload.sample_trace(wl.probs, n, args.seed + 2)
        replay = exact.simulate(wl, ids, d, rate=args.rate, measure_from=n // 2,
                                seed=args.seed)
    if args.json:
        out = {"prediction": asdict(pred), "deployment": asdict(d), "throughput": asdict(tp),
               "objects": wl.objects, "modelled": wl.modelled, "total_bytes": wl.total_bytes,
               "exact": replay.shares() if replay else None}
        json.dump(out, sys.stdout, indent=1)
        print()
    else:
        print(render(pred, wl, d, tp, replay, seconds))
    return 0
