"""What a soak run measured, judged against the rules, written to bench/SOAK.md
(and bench/out/soak/soak.json, samples.csv)."""

from __future__ import annotations

import csv
import json
import re
import statistics
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.soak_model import SPECS, Model
from bench.soak_traffic import BAD_IDS, BAD_PARAMS, EXPECTED, MIX, Stats, Traffic

if TYPE_CHECKING:
    from bench.soak import SoakSettings

MiB = 1024 * 1024

RULES = (
    "wrong bytes = 0 (a 200 body, HEAD ETag or 304 ETag that was never stored for that id, "
    "the fallback for an object that exists, an ETag header that is not the body's, a "
    "Content-Type that is not the body's)",
    "stale answers no race explains = 0: replaced bytes served after a purge that had "
    "answered `propagated: true` before the request was sent (`outdated:after-purge`), or "
    "later than disk.ttl + 3 s after the re-upload without `X-Cache: STALE` "
    "(`outdated:beyond-ttl`)",
    "HTTP 500 = 0",
    "unexpected statuses = 0 (a status outside the expected set of its request kind)",
    "client timeouts = 0 (no answer within 30 s: a hang)",
    "worker restarts = 0 (the supervisor restarted no worker)",
    "RSS growth <= {limit:.0%}: the mean summed RSS of the gateway's processes over the "
    "last {window:g} s against the mean over the first {window:g} s after warm-up "
    "({warmup:g} s)",
)


def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second) of (t, y) points."""
    if len(points) < 2:
        return 0.0
    ts = [t for t, _ in points]
    ys = [y for _, y in points]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _series(samples: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(s["t"], float(s[key])) for s in samples]


def _growth(points: list[tuple[float, float]], warmup: float, end: float, window: float
            ) -> dict[str, float]:
    after = [(t, y) for t, y in points if t >= warmup]
    base = [y for t, y in after if t < warmup + window] or [y for _, y in after[:1]]
    final = [y for t, y in after if t > end - window] or [y for _, y in after[-1:]]
    base_mean = statistics.fmean(base) if base else 0.0
    final_mean = statistics.fmean(final) if final else 0.0
    slope = _slope(after) * 60
    return {
        "first": points[0][1] if points else 0.0,
        "last": points[-1][1] if points else 0.0,
        "max": max((y for _, y in points), default=0.0),
        "baseline": base_mean, "final": final_mean,
        "growth": (final_mean / base_mean - 1) if base_mean else 0.0,
        "slope_per_min": slope,
        "slope_pct_per_min": (slope / base_mean) if base_mean else 0.0,
    }


def analyse(settings: SoakSettings, model: Model, result: dict[str, Any]) -> dict[str, Any]:
    traffic: Traffic = result["traffic"]
    stats: Stats = traffic.stats
    samples: list[dict[str, Any]] = result["samples"]
    end = samples[-1]["t"] if samples else settings.duration
    window = min(60.0, max(settings.sample_every * 2, (end - settings.warmup) / 3))
    rss = _growth(_series(samples, "rss_sum"), settings.warmup, end, window)
    disk = _growth(_series(samples, "disk_du"), settings.warmup, end, window)
    apparent = _growth(_series(samples, "disk_apparent"), settings.warmup, end, window)
    per_process: dict[str, dict[str, float]] = {}
    pids = sorted({pid for s in samples for pid in s["rss"]})
    for pid in pids:
        role = next((s["roles"][pid] for s in samples if pid in s["roles"]), "?")
        points = [(s["t"], float(s["rss"][pid])) for s in samples if pid in s["rss"]]
        per_process[f"{role} {pid}"] = _growth(points, settings.warmup, end, window)
    fds: dict[str, dict[str, int]] = {}
    for pid in sorted({pid for s in samples for pid in s["fds"]}):
        values = [s["fds"][pid] for s in samples if pid in s["fds"] and s["fds"][pid] >= 0]
        if values:
            fds[str(pid)] = {"first": values[0], "last": values[-1], "max": max(values)}
    log = result.get("gateway_log", "")
    restarts = len(re.findall(r"exited with .*; restarting", log))
    timeouts = sum(n for (_, exc), n in stats.exceptions.items() if exc == "client-timeout")
    exceptions = sum(stats.exceptions.values())
    unexpected = sum(stats.unexpected.values())
    outdated = {v: n for v, n in stats.verdicts.items() if v.startswith("outdated:")}
    unexplained = outdated.get("outdated:after-purge", 0) + outdated.get(
        "outdated:beyond-ttl", 0)
    checks = {
        "wrong bytes": (stats.wrong, stats.wrong == 0),
        "stale answers no race explains": (unexplained, unexplained == 0),
        "HTTP 500": (stats.http_500, stats.http_500 == 0),
        "unexpected statuses": (unexpected, unexpected == 0),
        "client timeouts (hangs)": (timeouts, timeouts == 0),
        "worker restarts": (restarts, restarts == 0),
        f"RSS growth after warm-up (<= {settings.rss_growth_limit:.0%})":
            (f"{rss['growth']:+.1%}", rss["growth"] <= settings.rss_growth_limit),
    }
    findings = []
    if apparent["max"] > settings.disk_max_bytes * 1.05:
        findings.append(f"the disk cache reached {_mib(apparent['max'])} (file sizes; "
                        f"{_mib(disk['max'])} du) against disk.max_bytes "
                        f"{_mib(settings.disk_max_bytes)}")
    for pid, f in fds.items():
        if f["last"] - f["first"] > 50:
            findings.append(f"worker {pid}: open fds grew from {f['first']} to {f['last']}")
    slow = sum(stats.slow.values())
    if slow:
        budget = 2.0 + settings.read_timeout
        findings.append(f"{slow} answers took longer than connect_timeout + read_timeout "
                        f"({budget:g} s) + 0.5 s (see the table under errors by kind)")
    tracebacks = log.count("Traceback")
    if tracebacks:
        findings.append(f"{tracebacks} tracebacks in the gateway's log")
    if exceptions - timeouts:
        findings.append(f"{exceptions - timeouts} client-side connection errors "
                        "(see errors by kind)")
    latency = {kind: {"n": len(v), "p50": _pct(v, 50), "p99": _pct(v, 99), "max": max(v)}
               for kind, v in sorted(stats.latencies.items()) if v}
    return {
        "passed": all(ok for _, ok in checks.values()),
        "checks": {k: {"value": v, "ok": ok} for k, (v, ok) in checks.items()},
        "findings": findings,
        "requests": stats.total + exceptions,
        "answered": stats.total,
        "exceptions": exceptions,
        "elapsed": result.get("elapsed", end),
        "rss": rss, "disk": disk, "disk_apparent": apparent, "per_process": per_process,
        "fds": fds, "window": window, "latency": latency, "tracebacks": tracebacks,
        "restarts": restarts, "outdated": outdated,
        "rps_mean": stats.total / max(result.get("elapsed", end), 1e-9),
    }


# ---- markdown ------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]], align: str = "") -> list[str]:
    align = align or "l" * len(header)
    marks = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _split(answers: Counter[str]) -> tuple[int, int, int]:
    """(requests, error answers and exceptions, 200 STALE) of one fault event's counter."""
    total = sum(answers.values())
    errors = sum(n for a, n in answers.items() if not a.startswith(("200", "304", "400",
                                                                     "405")))
    stale = answers.get("200 STALE", 0)
    return total, errors, stale


def _fault_order(labels: set[str], result: dict[str, Any]) -> list[str]:
    names = []
    for event in result["schedule"]:
        if event.name not in names:
            names.append(event.name)
    order = ["none"]
    for name in names:
        order += [name, f"after {name}"]
    return [label for label in order if label in labels] + sorted(labels - set(order))


def _metrics_excerpt(text: str) -> list[str]:
    keep = re.compile(r"^gateway_(cache_(evictions|corrupt_dropped|write_errors|hits|misses|"
                      r"size_bytes|limit_bytes|entries)|stale_served|fallback_served|coalesced|"
                      r"origin_fetches|answers|redis_failures|redis_up|workers|"
                      r"cluster_[a-z_]+|retried|breaker[a-z_]*)")
    return [line for line in text.splitlines()
            if line and not line.startswith("#") and keep.match(line)]


def write(path: Path, settings: SoakSettings, model: Model, result: dict[str, Any],
          a: dict[str, Any], argv: list[str]) -> None:
    traffic: Traffic = result["traffic"]
    st = traffic.stats
    m = result["machine"]
    env = result["env"]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(result["started"]))
    took = result["finished"] - result["started"]
    verdict = "**PASSED**" if a["passed"] else "**FAILED**"
    cmd = ("make soak" if not settings.quick else "SOAK_QUICK=1 make soak")
    lines = [
        "# Soak run",
        "",
        f"Written by `python -m bench.soak` ({cmd}; also `BENCH_SOAK=1 make bench`) on "
        f"{started}; {a['elapsed']:.0f} s of traffic, {took:.0f} s in all. "
        f"Verdict: {verdict}.",
        "",
        f"Machine: {m['cpu'] or 'unknown CPU'}, {m['cores']} cores, {_mib(m['memory'])} RAM, "
        f"Linux {m['kernel']}, Python {m['python']}. Load average (1 min) "
        f"{result['load_start'][0]:.2f} before, {result['load_end'][0]:.2f} after. "
        "The gateway, moto, the fault proxy, redis-server and the client share those cores.",
        "",
        f"Command: `{' '.join(['python', '-m', 'bench.soak', *argv[1:]])}` with "
        + (", ".join(f"`{k}={v}`" for k, v in sorted(result.get("soak_env", {}).items()))
           or "no SOAK_* variables")
        + ".",
        "",
        "## Rules (exit status 1 if any is broken)",
        "",
    ]
    for rule in RULES:
        lines.append("- " + rule.format(limit=settings.rss_growth_limit, window=a["window"],
                                        warmup=settings.warmup))
    lines += ["", *_table(["check", "measured", ""],
                          [[k, v["value"], "ok" if v["ok"] else "**BROKEN**"]
                           for k, v in a["checks"].items()], "lrl")]
    if a["findings"]:
        lines += ["", "Reported, not judged:", ""] + [f"- {f}" for f in a["findings"]]

    # -- setup
    lines += [
        "", "## Setup", "",
        f"- {len(model.versions)} pictures in moto S3 (10-20 kB JPEG/PNG, seed "
        f"{settings.seed}) and {len(model.missing)} ids that do not exist (fallback): "
        f"{settings.ids} ids drawn Zipf (s = 1) with seeded ranks; {settings.users} user "
        "aliases set through `PUT /admin/users/{u}` before the traffic.",
        f"- The gateway: `python -m gateway`, {settings.workers} workers, behind nothing "
        "(the client talks to its port); S3 through the fault proxy "
        "(tests/support/proxy.py); one redis-server (tests/support/redis_server.py). "
        "Settings (environment):",
        "",
        *_table(["variable", "value"], [[f"`{k}`", f"`{v}`"] for k, v in sorted(env.items())
                                        if k.startswith("GATEWAY_")]),
        "",
        f"- Traffic: {settings.concurrency} loops, one request at a time each, started at "
        f"most {settings.rate:g} per second in all (the point is correctness over time, "
        "not throughput); client timeout 30 s. Mix: "
        + ", ".join(f"{k} {w} %" for k, w in MIX) + ". Variants: "
        + ", ".join(f"`?{s.query}`" for s in SPECS) + ". Bad ids: "
        + ", ".join(f"`{b if len(b) < 40 else b[:20] + '...'}`" for b in BAD_IDS)
        + "; bad parameters: " + ", ".join(f"`?{b}`" for b in BAD_PARAMS) + ".",
        "- Admin loop (every 1-3 s, one at a time): purge (`DELETE /admin/images/{id}`) "
        "35 %, new bytes straight into S3 then purge 25 %, new bytes into S3 without a "
        "purge (the gateway learns on revalidation, within disk.ttl) 15 %, upload through "
        "`PUT /admin/images/{id}` 10 %, alias change 15 %. Ids Zipf-drawn, so hot "
        "pictures change under traffic.",
        "- Checks on every answer: the status against its kind's expected set; for 200 "
        "answers the sha256 of the body (variants: against the gateway's own "
        "`gateway.variants.transform.render` of each stored version, run here), for HEAD and 304 "
        "the ETag; ETag header = the body's, Content-Type = the body's magic, a 304 only "
        "for the ETag sent, HEAD's Content-Length. See bench/soak_model.py for the verdicts.",
    ]

    # -- totals
    answered = a["answered"]
    lines += [
        "", "## Requests", "",
        f"**{answered:,} answered** ({a['rps_mean']:.0f}/s on average) of {a['requests']:,} "
        f"sent; {a['exceptions']} client-side exceptions. Origin (proxy) requests: "
        f"{result.get('origin_requests', 0):,}.",
        "",
    ]
    kinds = [k for k in EXPECTED if st.answered.get(k) or any(
        kk == k for kk, _ in st.exceptions)]
    statuses = sorted({s for (_, s) in st.statuses})
    rows = []
    for kind in kinds:
        lat = a["latency"].get(kind, {})
        rows.append([kind, st.answered.get(kind, 0)]
                    + [st.statuses.get((kind, s), "") for s in statuses]
                    + [sum(n for (k, _), n in st.exceptions.items() if k == kind) or "",
                       f"{lat.get('p50', 0) * 1000:.1f}", f"{lat.get('p99', 0) * 1000:.0f}",
                       f"{lat.get('max', 0) * 1000:.0f}"])
    lines += _table(["kind", "answered", *map(str, statuses), "exceptions", "p50 ms",
                     "p99 ms", "max ms"], rows, "l" + "r" * (len(statuses) + 5))
    lines += ["", "By status and X-Cache (admin answers carry no X-Cache: `-`):", ""]
    lines += _table(["status", "X-Cache", "answers", "share"],
                    [[s, x, f"{n:,}", f"{100 * n / max(answered, 1):.2f} %"]
                     for (s, x), n in sorted(st.status_x_cache.items(),
                                             key=lambda kv: (kv[0][0], -kv[1]))], "llrr")

    # -- correctness
    lines += ["", "## Correctness", ""]
    lines += _table(["verdict", "answers"], [[f"`{v}`", f"{n:,}"] for v, n in
                                             sorted(st.verdicts.items())], "lr")
    lines += [
        "",
        "`ok`: the current bytes (or the fallback for a missing id); `ok:user-fallback`: an "
        "alias the gateway could not resolve (Redis down or emptied by the restart) answered "
        "with the fallback picture; `ok:previous-alias`: the picture of an alias being "
        "replaced; `outdated:stale`: replaced bytes served `STALE` while S3 failed "
        "(allowed); `outdated:in-ttl`: replaced bytes within disk.ttl + 3 s of an S3 "
        "re-upload without a purge (allowed: the gateway only learns on revalidation); "
        "`outdated:after-purge` / `outdated:beyond-ttl`: a broken rule; `wrong:*`: counted "
        "as wrong bytes.",
    ]
    bad = [(v, f, n) for (v, f), n in st.verdicts_by_fault.items()
           if not v.startswith("ok")]
    if bad:
        lines += ["", "Non-`ok` verdicts by the fault in force when the request started:", ""]
        lines += _table(["verdict", "fault", "answers"],
                        [[f"`{v}`", f, n] for v, f, n in sorted(bad)], "llr")
    if st.unexpected:
        lines += ["", "Unexpected statuses:", ""]
        lines += _table(["kind", "status", "fault", "answers"],
                        [[k, s, f, n] for (k, s, f), n in sorted(st.unexpected.items())],
                        "lrlr")

    # -- errors by kind and fault
    lines += ["", "## Errors by kind and fault", "",
              "Every answer that is not its kind's success (200/304; 400 for bad ids and "
              "parameters, 405 for the bad method), and every client-side exception, by the "
              "fault in force when the request was sent (`after X`: within "
              f"{settings.recovery:g} s after X was healed, while the breaker closes and "
              "caches refill).", ""]
    labels = {f for f, _ in st.fault_answers}
    rows = []
    for fault in _fault_order(labels, result):
        answers = {ans: n for (f, ans), n in st.fault_answers.items() if f == fault}
        total = sum(answers.values())
        errs = {ans: n for ans, n in answers.items() if not ans.startswith(("200", "304",
                                                                             "400", "405"))}
        stale = sum(n for ans, n in answers.items() if ans.endswith(" STALE"))
        rows.append([fault, f"{total:,}", f"{sum(errs.values()):,}",
                     f"{100 * sum(errs.values()) / max(total, 1):.1f} %", stale or "",
                     ", ".join(f"{ans} x{n}" for ans, n in sorted(errs.items(),
                                                                   key=lambda kv: -kv[1]))])
    lines += _table(["fault", "requests", "errors", "error share", "200 STALE",
                     "errors by kind"], rows, "lrrrrl")
    if st.error_latency_max:
        lines += ["", "Slowest error answer of each kind (the budget for an origin fetch is "
                  f"connect_timeout 2 s + read_timeout {settings.read_timeout:g} s; a request "
                  "may also wait for the fetch queue, 2 s, or for another request's fetch):",
                  ""]
        lines += _table(["error", "max latency"],
                        [[k, f"{v:.2f} s"] for k, v in sorted(st.error_latency_max.items())],
                        "lr")

    if st.slow:
        lines += ["", f"Answers slower than connect_timeout + read_timeout + 0.5 s "
                  f"({2.0 + settings.read_timeout + 0.5:g} s), by kind, answer and fault:", ""]
        lines += _table(["kind", "answer", "fault", "answers"],
                        [[k, a_, f, n] for (k, a_, f), n in sorted(st.slow.items())], "lllr")

    # -- faults
    lines += ["", "## Fault schedule", "",
              f"One fault at a time, every type in turn (order shuffled per round, seed "
              f"{settings.seed}), each for {settings.fault_length[0]:g}-"
              f"{settings.fault_length[1]:g} s, {settings.fault_gap[0]:g}-"
              f"{settings.fault_gap[1]:g} s apart, the first at {settings.fault_first:g} s.",
              ""]
    rows = []
    for i, e in enumerate(result["schedule"]):
        during, after = _split(e.during), _split(e.after)
        rows.append([i + 1, e.name, f"{e.started:.1f}", f"{e.ended:.1f}", f"{e.heal_s:.2f} s",
                     during[0], during[1], during[2], after[0], after[1], after[2],
                     "; ".join(e.notes)])
    lines += _table(["#", "fault", "from s", "to s", "heal took", "requests", "errors",
                     "200 STALE", "requests after", "errors after", "STALE after", "notes"],
                    rows, "rlrrrrrrrrrl")
    lines += ["", "Requests are counted by when they were sent: during the fault, and in the "
              f"{settings.recovery:g} s after it was healed (\"after\"). What each fault does:",
              ""]
    seen: set[str] = set()
    for e in result["schedule"]:
        if e.name not in seen:
            seen.add(e.name)
            lines.append(f"- `{e.name}`: {e.what}")

    # -- resources
    rss, disk, app = a["rss"], a["disk"], a["disk_apparent"]
    lines += [
        "", "## Memory, disk, file descriptors", "",
        f"Sampled every {settings.sample_every:g} s. Warm-up: the first {settings.warmup:g} "
        f"s. Slope: least squares over the samples after warm-up. Baseline / final: means "
        f"over the first / last {a['window']:g} s after warm-up.",
        "",
    ]
    rows = [["RSS, all gateway processes", _mib(rss["first"]), _mib(rss["last"]),
             _mib(rss["max"]), _mib(rss["baseline"]), _mib(rss["final"]),
             f"{rss['growth']:+.1%}", f"{rss['slope_per_min'] / MiB:+.2f} MiB/min "
             f"({rss['slope_pct_per_min']:+.2%}/min)"]]
    for name, g in a["per_process"].items():
        rows.append([f"RSS, {name}", _mib(g["first"]), _mib(g["last"]), _mib(g["max"]),
                     _mib(g["baseline"]), _mib(g["final"]), f"{g['growth']:+.1%}",
                     f"{g['slope_per_min'] / MiB:+.2f} MiB/min"])
    rows.append(["disk cache (du)", _mib(disk["first"]), _mib(disk["last"]), _mib(disk["max"]),
                 _mib(disk["baseline"]), _mib(disk["final"]), f"{disk['growth']:+.1%}",
                 f"{disk['slope_per_min'] / MiB:+.2f} MiB/min"])
    rows.append(["disk cache (file sizes)", _mib(app["first"]), _mib(app["last"]),
                 _mib(app["max"]), _mib(app["baseline"]), _mib(app["final"]),
                 f"{app['growth']:+.1%}", f"{app['slope_per_min'] / MiB:+.2f} MiB/min"])
    lines += _table(["what", "first", "last", "max", "baseline", "final", "growth", "slope"],
                    rows, "lrrrrrrl")
    peak = result.get("peak")
    if peak is not None:
        lines += ["", f"Peak summed RSS sampled every 0.5 s: {_mib(peak.rss_sum)} "
                      f"({peak.processes} processes); sum of the kernel's per-process peaks "
                      f"(VmHWM): {_mib(peak.hwm_sum)}. memory.max_bytes "
                      f"{_mib(settings.memory_max_bytes)} (the whole gateway's LRU), "
                      f"disk.max_bytes {_mib(settings.disk_max_bytes)}."]
    lines += ["", "Open file descriptors per worker:", ""]
    lines += _table(["worker pid", "first", "last", "max"],
                    [[pid, f["first"], f["last"], f["max"]] for pid, f in a["fds"].items()],
                    "lrrr")
    lines += ["", "Over time (every 30 s; all samples in bench/out/soak/samples.csv):", ""]
    samples = result["samples"]
    step = max(1, round(30 / settings.sample_every))
    rows = []
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        workers = [s["rss"].get(pid, 0) for pid in s["workers"]]
        rows.append([f"{s['t']:.0f}", s["fault"], f"{s['rps']:.0f}",
                     sum(s["errors"].values()), _mib(s["rss_sum"]),
                     " / ".join(_mib(w) for w in workers),
                     " / ".join(str(s["fds"].get(pid, "")) for pid in s["workers"]),
                     _mib(s["disk_du"]), s["disk_files"], s["disk_temps"]])
    lines += _table(["t s", "fault at the sample", "req/s (5 s)", "errors (5 s)", "RSS sum",
                     "RSS workers", "fds workers", "disk du", "files", "temp files"],
                    rows, "rlrrrllrrr")

    # -- gateway's own counters
    excerpt = _metrics_excerpt(result.get("metrics", ""))
    if excerpt:
        lines += ["", "## The gateway's counters at the end (/metrics, excerpt)", "", "```",
                  *excerpt, "```"]

    # -- examples
    interesting = [k for k in st.examples if not k.startswith(("ok", "outdated:stale",
                                                               "outdated:in-ttl"))]
    if interesting:
        lines += ["", "## Examples (first answers of each kind of problem)", ""]
        for key in sorted(interesting):
            lines += [f"**{key}**", ""]
            for ex in st.examples[key][:5]:
                lines.append(f"- t={ex['at_s']} s, `{ex['request']}` -> {ex['status']} "
                             f"X-Cache {ex['x_cache']}, fault `{ex['fault']}`, "
                             f"{ex['latency_s']} s; {ex['detail'][:160]}"
                             + (f" (body in bench/out/soak/{ex['body_saved']})"
                                if ex.get("body_saved") else ""))
            lines.append("")
    notes = sorted(st.admin_notes.items())
    if notes:
        lines += ["", "## Admin loop", ""]
        lines += [f"- {k}: {v}" for k, v in notes]
    notes_file = path.with_name("SOAK-NOTES.md")
    if notes_file.exists():
        lines += ["", notes_file.read_text().rstrip()]
    path.write_text("\n".join(lines).rstrip() + "\n")


def write_raw(folder: Path, settings: SoakSettings, result: dict[str, Any],
              a: dict[str, Any]) -> None:
    samples = result["samples"]
    with open(folder / "samples.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["t", "fault", "requests", "rps", "errors", "rss_sum", "rss_workers",
                         "fds_workers", "disk_du", "disk_apparent", "disk_files",
                         "disk_temps"])
        for s in samples:
            writer.writerow([s["t"], s["fault"], s["requests"], s["rps"],
                             json.dumps(s["errors"]), s["rss_sum"],
                             " ".join(str(s["rss"].get(p, 0)) for p in s["workers"]),
                             " ".join(str(s["fds"].get(p, "")) for p in s["workers"]),
                             s["disk_du"], s["disk_apparent"], s["disk_files"],
                             s["disk_temps"]])
    st: Stats = result["traffic"].stats
    doc = {
        "settings": asdict(settings), "analysis": a, "machine": result["machine"],
        "schedule": [{**{k: v for k, v in vars(e).items() if k not in ("during", "after")},
                      "during": dict(e.during), "after": dict(e.after)}
                     for e in result["schedule"]],
        "slow": {f"{k} | {a} | {f}": n for (k, a, f), n in st.slow.items()},
        "admin_events": st.admin_events,
        "answered": dict(st.answered),
        "statuses": {f"{k} {s}": n for (k, s), n in st.statuses.items()},
        "x_cache": dict(st.x_cache), "verdicts": dict(st.verdicts),
        "errors": {f"{label} | {fault}": n for (label, fault), n in st.errors.items()},
        "exceptions": {f"{k} {e}": n for (k, e), n in st.exceptions.items()},
        "examples": st.examples, "admin": dict(st.admin_notes),
    }
    (folder / "soak.json").write_text(json.dumps(doc, indent=1, default=str))


def summary_text(a: dict[str, Any]) -> str:
    lines = [f"soak: {'PASSED' if a['passed'] else 'FAILED'}; {a['answered']:,} answered "
             f"({a['rps_mean']:.0f}/s), {a['exceptions']} client exceptions"]
    for name, check in a["checks"].items():
        lines.append(f"  {'ok    ' if check['ok'] else 'BROKEN'} {name}: {check['value']}")
    rss, disk = a["rss"], a["disk"]
    lines.append(f"  RSS {_mib(rss['first'])} -> {_mib(rss['last'])} (max {_mib(rss['max'])},"
                 f" slope {rss['slope_per_min'] / MiB:+.2f} MiB/min after warm-up)")
    lines.append(f"  disk {_mib(disk['first'])} -> {_mib(disk['last'])} "
                 f"(max {_mib(disk['max'])})")
    lines += [f"  finding: {f}" for f in a["findings"]]
    return "\n".join(lines)

