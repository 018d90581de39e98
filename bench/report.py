"""bench/RESULTS.md from one run's Results: the table, the targets, the machine,
the commands. The "Profile and changes" section is kept from the existing file
(the lead fills it in by hand), so a new run does not wipe it."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report_peers, table
from bench.procs import MB, MiB
from bench.report_peers import browser_rows, peer_rows
from bench.results import REPO_ROOT, Measure, Results
from bench.table import Row, Section, wrk_row

PROFILE_HEADING = "## Profile and changes"
PROFILE_PLACEHOLDER = """\
_To be filled in by the lead after profiling._ Run `make bench BENCH_ARGS=--profile`
(py-spy records one gateway worker during the memory-hit and the disk-hit scenarios
and writes `bench/out/profile-memory-hits.svg`, `bench/out/profile-disk-hits.svg` and
a text summary of the hottest functions, `bench/out/profile-*-top.txt`), then note
here what the profile showed, what was changed, and the before/after figures of
this table that each change bought.
"""

RSS_OVERHEAD = 80 * MB


@dataclass
class Target:
    what: str
    goal: str
    measured: str
    met: bool | None


def _cmd_version(argv: list[str], pattern: str = r"(\S*\d+\.\d+\S*)") -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    text = (proc.stdout + proc.stderr).strip().splitlines()
    if not text:
        return "?"
    match = re.search(pattern, text[0])
    return match.group(1) if match else text[0]


def _pkg(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    from tests.support.nginx import find_nginx
    from tests.support.redis_server import find_redis_server

    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": ram,
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "nginx": _cmd_version([find_nginx(), "-v"], r"nginx/(\S+)"),
        "wrk": _cmd_version(["wrk", "-v"], r"wrk (\S+)"),
        "redis-server": _cmd_version([find_redis_server(), "--version"], r"v=(\S+)"),
        "aiohttp / uvloop / moto / Pillow": " / ".join(
            _pkg(p) for p in ("aiohttp", "uvloop", "moto", "pillow")),
    }


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def _mb(value: int) -> str:
    return f"{value / MB:.1f} MB"


def _rel(text: str) -> str:
    return text.replace(str(REPO_ROOT) + "/", "")


def anchor_rps(results: Results, key: str) -> float | None:
    if key == "proxy_cache":
        runs = [results.measures[k].wrk.rps for k in ("proxy_cache", "proxy_cache_2")
                if k in results.measures]
        return sum(runs) / len(runs) if runs else None
    measure = results.measures.get(key)
    return measure.wrk.rps if measure else None


def _ratio(results: Results, key: str, anchor: str) -> float | None:
    measure, base = results.measures.get(key), anchor_rps(results, anchor)
    if measure is None or not base:
        return None
    return measure.wrk.rps / base


#: Issue 13: one worker's RSS with memory.max_bytes 1 MiB, at rest and after the run.
WORKER_RSS_TARGET = 60 * MB


def targets(results: Results) -> list[Target]:
    """Issue 13's targets: against what aiohttp itself does (the bare handler, same
    run, same workers), nginx for the edge, thumbor for the peer (its rows)."""
    out: list[Target] = []
    r = _ratio(results, "memory", "bare")
    out.append(Target("memory hits: throughput", ">= 0.9x the bare aiohttp handler",
                      f"{r:.2f}x" if r is not None else "not measured",
                      None if r is None else r >= 0.9))
    mem, bare = results.measures.get("memory"), results.measures.get("bare")
    if mem is not None and bare is not None:
        out.append(Target(f"memory hits: p99 at {results.settings.connections} connections",
                          f"<= 1.2x bare's p99 ({_ms(bare.wrk.p99_ms)})",
                          _ms(mem.wrk.p99_ms), mem.wrk.p99_ms <= 1.2 * bare.wrk.p99_ms))
    r = _ratio(results, "disk", "bare")
    out.append(Target("disk hits: throughput", ">= 0.7x the bare aiohttp handler",
                      f"{r:.2f}x" if r is not None else "not measured",
                      None if r is None else r >= 0.7))
    r = _ratio(results, "edge_micro", "proxy_cache")
    out.append(Target("behind nginx with micro-cache: throughput",
                      ">= 1.0x nginx proxy_cache",
                      f"{r:.2f}x" if r is not None else "not measured",
                      None if r is None else r >= 1.0))
    gets = results.burst_origin_gets
    out.append(Target(f"cold burst of {results.settings.burst}: origin GETs", "exactly 1",
                      str(gets) if gets is not None else "not measured",
                      None if gets is None else gets == 1))
    disk = results.memory.get("gateway-disk")
    if disk is not None and disk.per_process:
        largest = max(disk.per_process.values())
        out.append(Target(
            "one worker's RSS, memory.max_bytes 1 MiB (largest process at the peak)",
            f"<= {_mb(WORKER_RSS_TARGET)}", _mb(largest), largest <= WORKER_RSS_TARGET))
    return out


def _met(value: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "-"}[value]


SCENARIO_ROWS = [
    # key, anchor key, target text, which target line decides "met"
    ("proxy_cache", None, "anchor", None),
    ("bare", "proxy_cache", "ceiling (aiohttp itself)", None),
    ("memory", "bare", ">= 0.9x bare, p99 <= 1.2x bare's", ("memory hits",)),
    ("edge_micro", "proxy_cache", ">= 1.0x", ("behind nginx with micro-cache",)),
    ("edge_plain", "proxy_cache", "none (informational)", None),
    ("proxy_cache_2", None, "anchor (repeat)", None),
    ("preset", "proxy_cache", "none (informational)", None),
    ("blurhash", "proxy_cache", "none (informational)", None),
    ("lqip", "proxy_cache", "none (informational)", None),
    ("static", None, "anchor", None),
    ("disk", "bare", ">= 0.7x bare", ("disk hits",)),
]


def _scenario_rows(results: Results) -> list[Row]:
    goals = targets(results)
    rows: list[Row] = []
    anchor_names = {"proxy_cache": "nginx proxy_cache", "static": "nginx static",
                    "bare": "bare aiohttp"}
    for key, anchor, goal, decides in SCENARIO_ROWS:
        measure: Measure | None = results.measures.get(key)
        if measure is None:
            continue
        ratio = _ratio(results, key, anchor) if anchor else None
        met: bool | None = None
        if decides:
            flags = [t.met for t in goals if t.what.startswith(decides[0])]
            met = None if any(f is None for f in flags) else all(flags)
        rows.append(wrk_row(measure, "-" if ratio is None else
                            f"{ratio:.2f}x {anchor_names.get(anchor or '', '-')}", goal, met))
    return rows


def _burst_rows(results: Results) -> list[Row]:
    burst = results.burst
    if burst is None:
        return []
    errors = sum(burst.errors.values())
    non_2xx = sum(v for k, v in burst.statuses.items() if not 200 <= k < 300)
    return [Row(f"cold burst: {burst.requests} concurrent GETs of one new image",
                f"{burst.requests / burst.wall_s:,.0f} req/s (all done in "
                f"{burst.wall_s * 1000:.0f} ms)",
                f"{burst.percentile(50):.0f} ms", f"{burst.percentile(99):.0f} ms",
                f"{errors} / {non_2xx}", "-",
                f"1 origin GET (got {results.burst_origin_gets})",
                results.burst_origin_gets == 1)]


#: The sections of the one table, in order (bench/table.py): add a row or a section here.
TABLE_SECTIONS: list[Section] = [_scenario_rows, _burst_rows, peer_rows, browser_rows]


def _existing_profile_section(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    start = text.find(PROFILE_HEADING)
    if start < 0:
        return None
    body = text[start + len(PROFILE_HEADING):]
    end = re.search(r"^## ", body, flags=re.MULTILINE)
    section = body[: end.start()] if end else body
    section = section.strip("\n")
    if not section.strip() or section.strip() == PROFILE_PLACEHOLDER.strip():
        return None
    return section + "\n"


def _busy_note(results: Results) -> list[str]:
    cores = os.cpu_count() or 1
    load = max(results.load_start[0], results.load_end[0])
    if load <= cores * 0.75:
        return []
    return [f"**The machine was busy during this run** (1-minute load average up to "
            f"{load:.1f} on {cores} cores before/after it: other work, such as test suites, "
            "ran alongside). Every server suffered from it, but not equally; treat the "
            "ratios as rough and re-run on a quiet machine"
            + (f" (this run interleaved {results.settings.rounds} rounds of every scenario "
               "and keeps the median)." if results.settings.rounds > 1 else
               " (BENCH_ROUNDS=3 interleaves three runs of every scenario and keeps the "
               "median)."), ""]


def render(results: Results, argv: list[str], profile_section: str | None) -> str:
    s = results.settings
    goals = targets(results)
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(results.started))
    took = results.finished - results.started
    pics = results.pictures
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`python -m bench`) on {when}; the run took {took:.0f} s."
        + (" **Quick smoke run (BENCH_QUICK=1): figures are not meaningful.**"
           if s.quick else ""),
        "",
        "Every figure below comes from the same run on the same machine: wrk "
        f"({s.threads} threads, {s.connections} connections, {s.duration:g} s per scenario "
        f"after a {s.warm:g} s warm-up"
        + (f"; {s.rounds} interleaved rounds, the median run shown, every run in brackets"
           if s.rounds > 1 else "")
        + f") requests {pics['count']:.0f} different pictures "
        f"({s.mode}: each wrk thread walks the whole list), so a cache must hold the set, "
        "not one hot object. The gateway runs with "
        f"`server.workers = {s.workers}` (one per core) and **its access log off** "
        "(`GATEWAY_SERVER_ACCESS_LOG=false`); every nginx (anchors and the shipped config) "
        "runs with " + ("its access log on" if s.nginx_access_log else "**its access log off**")
        + f" and `worker_processes {s.workers}`. wrk, the servers and the bench share the "
        f"{os.cpu_count()} cores, so absolute figures are low; the ratios are what counts.",
        "",
        *_busy_note(results),
        "## Scenarios",
        "",
        *table.render(results, TABLE_SECTIONS),
        "",
        "Ratios are req/s over the anchor's req/s; the proxy_cache anchor is the mean of its "
        + ("two scenario medians" if s.rounds > 1 else "two runs")
        + " (before and after the gateway scenarios: "
        + ", ".join(f"{results.measures[k].wrk.rps:,.0f}" for k in ("proxy_cache",
                                                                     "proxy_cache_2")
                    if k in results.measures)
        + " req/s). Latencies are wrk's (no coordinated-omission correction). "
        "\"errors\" are socket errors (connect/read/write/timeout), \"non-2xx\" responses "
        "outside 2xx/3xx.",
        *report_peers.notes(results),
        "",
        "## Targets (issue 13)",
        "",
        "| target | goal | measured | |",
        "| --- | --- | --- | --- |",
        *[f"| {t.what} | {t.goal} | {t.measured} | {_met(t.met)} |" for t in goals],
        "",
        "## What answered (X-Cache, sampled)",
        "",
        "200 random pictures over fresh connections (so every worker behind the "
        "SO_REUSEPORT port is asked) right before and after each measured run:",
        "",
    ]
    for key in ("memory", "edge_micro", "edge_plain", "disk"):
        m = results.measures.get(key)
        if m is not None:
            header = "X-Micro-Cache / X-Cache" if key.startswith("edge") else "X-Cache"
            gets = ("" if m.origin_gets is None
                    else f"; origin GETs during the run: {m.origin_gets}")
            lines.append(f"- {m.title} ({header}): before: {m.layers_before}; "
                         f"after: {m.layers_after}{gets}")
    lines.append(f"- gateway first pass over the set (cold, from S3): {results.first_pass}; "
                 f"{results.warm_origin_gets} origin GETs for {pics['count']:.0f} pictures "
                 f"and {s.workers} workers")
    burst = results.burst
    if burst is not None:
        lines += [
            "",
            "## Cold burst",
            "",
            f"{burst.requests} connections to the gateway are opened first (in "
            f"{burst.connect_s * 1000:.0f} ms), then one `GET /images/{results.burst_key}` "
            "is written on every one of them before any response is read; the object was "
            "uploaded after the gateway started. The origin (moto, through the counting "
            f"proxy of tests/support/proxy.py) holds its first byte for "
            f"{s.burst_origin_delay:g} s, like a slow S3 GET, so the whole burst overlaps the "
            "fetch.",
            "",
            f"- origin GETs for the object: **{results.burst_origin_gets}** "
            f"(all origin requests for it: {results.burst_origin_requests})",
            f"- statuses: {dict(burst.statuses)}; X-Cache: {dict(burst.layers)}; body sizes: "
            f"{dict(burst.bodies)}; client errors: {dict(burst.errors) or 'none'}",
            f"- latency: p50 {burst.percentile(50):.0f} ms, p99 {burst.percentile(99):.0f} ms, "
            f"all {burst.requests} answered within {burst.wall_s * 1000:.0f} ms",
        ]
        if (results.burst_origin_gets or 0) > 1:
            lines.append(
                f"- Each of the {s.workers} worker processes has its own single-flight "
                "table, so the burst costs up to one origin GET per worker unless the "
                "workers coordinate (for example a short Redis lock per key).")
    lines += ["", "## Memory", "",
              "Summed RSS of every process of the gateway (supervisor, workers, and "
              "multiprocessing's resource tracker), sampled from /proc every 0.1 s while "
              "that gateway ran (fill, warm-up, runs and, for gateway-memory, the cold "
              "burst). `memory.max_bytes` is the whole gateway's LRU budget, shared out "
              "equally among the N workers; the target is read strictly (the sum of every "
              "process against max_bytes + 80 MB).", "",
              "| gateway | memory.max_bytes | peak RSS (sum) | PSS at that peak | "
              "sum of per-process VmHWM | per process at the peak | target | sum | "
              "largest process alone |",
              "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |"]
    for name, peak in results.memory.items():
        limit = results.memory_limits[name]
        per_sorted = sorted(peak.per_process.values(), reverse=True)
        per = ", ".join(_mb(v) for v in per_sorted)
        largest = per_sorted[0] if per_sorted else 0
        lines.append(f"| {name} | {limit / MiB:g} MiB | {_mb(peak.rss_sum)} | "
                     f"{_mb(peak.pss_sum)} | {_mb(peak.hwm_sum)} | {per} | "
                     f"< {_mb(limit + RSS_OVERHEAD)} "
                     f"| {_met(peak.rss_sum < limit + RSS_OVERHEAD)} "
                     f"| {_met(largest < limit + RSS_OVERHEAD)} (informational) |")
    lines += ["", "The processes are, largest first: the workers, the supervisor, "
              "multiprocessing's resource tracker. A worker with an (almost) empty LRU "
              "(gateway-disk) shows the fixed cost of one worker process; the supervisor "
              "only starts and watches workers."]
    if results.longtail is not None:
        from bench.longtail import section

        lines += ["", *section(results.longtail)]
    lines += ["", "## Machine", "", "| | |", "| --- | --- |"]
    for key, value in machine().items():
        lines.append(f"| {key} | {value} |")
    lines.append("| load average (1/5/15 min) at the start, at the end | "
                 f"{' '.join(f'{x:.2f}' for x in results.load_start)}, "
                 f"{' '.join(f'{x:.2f}' for x in results.load_end)} |")
    lines += [
        "",
        "Other work on the machine during the run (other test suites share it) shows up "
        "as noise in every figure; compare the ratios of one run, and re-run when in doubt.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "make bench                      # the whole run below; writes this file",
        "make bench BENCH_ARGS=--profile # py-spy flame graphs into bench/out/ instead",
        "BENCH_QUICK=1 make bench        # 2 s per scenario: a smoke run",
        "```",
        "",
        "This file came from `"
        + " ".join([*(f"{k}={shlex.quote(v)}" for k, v in results.bench_env.items()),
                    "make bench" if len(argv) <= 1 else shlex.join(
                        [".venv/bin/python", "-m", "bench", *argv[1:]])])
        + "`.",
        "",
        "`make bench` installs what it needs first: `redis-server`, `nginx` and `wrk` "
        "(Debian packages, via `tools/ensure-system-deps.sh`), the test extra (Pillow, moto) "
        "and py-spy into the venv. Then:",
        "",
        "```sh",
        f"{s.env_line()} \\",
        f"  {shlex.join(['.venv/bin/python', '-m', 'bench', *argv[1:]])}",
        "```",
        "",
        f"Pictures: {pics['count']:.0f} seeded (seed {s.seed}) into `bench/out/images/`: "
        f"{pics['jpeg']:.0f} JPEG 160x160, {pics['png']:.0f} PNG 128x128, "
        f"{pics['min']:.0f}-{pics['max']:.0f} bytes (median {pics['median']:.0f}, "
        f"{pics['total'] / MB:.1f} MB in all); uploaded to moto's S3 "
        "(`moto.server.ThreadedMotoServer`), bucket `bench-images`, with the "
        "`public-read` ACL: moto answers anonymous GETs of private objects with 403, and "
        "the proxy_cache anchor fetches unsigned, like nginx in front of a public bucket. "
        "The gateway reaches moto through the counting proxy "
        "(`tests.support.proxy.FaultProxy`) and signs its URLs as usual (moto checks no "
        "signatures).",
        "",
        "Gateway (`python -m gateway` via tests/support/gateway_process.py), environment:",
        "",
    ]
    for name, env in results.gateway_env.items():
        shown = {k: ("***" if "SECRET" in k else _rel(v)) for k, v in sorted(env.items())}
        shown["GATEWAY_REDIS_URL"] = "redis://127.0.0.1:PORT/0"
        shown["GATEWAY_S3_ENDPOINT"] = "http://127.0.0.1:PORT (counting proxy -> moto)"
        lines += [f"- {name}:", "", "  ```sh"]
        lines += [f"  {k}={shlex.quote(v)}" for k, v in shown.items()]
        lines += ["  ```", ""]
    lines += [
        "nginx: the anchors from `bench/nginx-static.conf` (sendfile, open_file_cache) and "
        "`bench/nginx-s3-cache.conf` (proxy_cache in front of moto, 1 h validity); the "
        "shipped `deploy/nginx.conf` rendered by `tests.support.nginx.render_nginx_conf` "
        "(upstream = the gateway's one port, `micro_cache=True/False`)"
        + ("" if s.nginx_access_log else ", its access_log turned off") + ".",
        "",
        "wrk, one command per run (the full outputs are in `bench/out/run/wrk-*.txt`):",
        "",
        "```sh",
    ]
    for m in results.measures.values():
        command = re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:PORT", _rel(m.wrk.command))
        command = command.replace("/usr/bin/wrk", "wrk")
        lines.append(f"{command}   # {m.title}")
    lines += ["```", ""]
    lines += [PROFILE_HEADING, "", (profile_section or PROFILE_PLACEHOLDER).rstrip("\n"), ""]
    return "\n".join(lines)


def write(path: Path, results: Results, argv: list[str]) -> None:
    section = _existing_profile_section(path)
    path.write_text(render(results, argv, section))


def as_json(results: Results) -> dict[str, Any]:
    return {
        "settings": vars(results.settings),
        "pictures": results.pictures,
        "started": results.started,
        "finished": results.finished,
        "measures": {k: {"title": m.title, **m.wrk.as_dict(), "layers_before": m.layers_before,
                         "layers_after": m.layers_after, "origin_gets": m.origin_gets,
                         "runs_rps": [round(r.rps, 1) for r in m.runs]}
                     for k, m in results.measures.items()},
        "burst": None if results.burst is None else {
            "requests": results.burst.requests, "origin_gets": results.burst_origin_gets,
            "statuses": dict(results.burst.statuses), "layers": dict(results.burst.layers),
            "errors": dict(results.burst.errors), "wall_s": results.burst.wall_s,
            "p50_ms": results.burst.percentile(50), "p99_ms": results.burst.percentile(99)},
        "memory": {k: vars(v) | {"limit": results.memory_limits[k]}
                   for k, v in results.memory.items()},
        "targets": [vars(t) for t in targets(results)],
        "peers": None if results.peers is None else dataclasses.asdict(results.peers),
        "browser": None if results.browser is None else dataclasses.asdict(results.browser),
        "longtail": results.longtail,
    }


def summary_text(results: Results) -> str:
    lines = ["", "scenario                                     req/s     p50 ms   p99 ms"]
    for m in results.measures.values():
        lines.append(f"{m.title[:42]:<42} {m.wrk.rps:>9,.0f} {m.wrk.p50_ms:>9.2f} "
                     f"{m.wrk.p99_ms:>8.2f}")
    lines.append("")
    for t in targets(results):
        lines.append(f"{_met(t.met).strip('*'):>8}  {t.what}: {t.measured} (goal {t.goal})")
    for row in peer_rows(results) + browser_rows(results):
        if row.met is not None:
            lines.append(f"{_met(row.met).strip('*'):>8}  {row.what}: {row.figure}, "
                         f"{row.ratio} (goal {row.target})")
    return "\n".join(lines)
