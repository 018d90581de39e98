"""The table rows of the peers (thumbor, one process each) and of the browser headline
(bench/thumbor_peer.py, bench/browser_headline.py), and their targets (issue 13)."""

from __future__ import annotations

from bench.results import Headline, PeerFigures, Results
from bench.table import Row, mb, times, wrk_row

FIRST_SLACK = 1.0  # "no slower than thumbor": the gateway's median <= thumbor's


def _rps(results: Results, key: str) -> float | None:
    measure = results.measures.get(key)
    return measure.wrk.rps if measure else None


def _over(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def peer_rows(results: Results) -> list[Row]:
    m = results.measures
    peers = results.peers
    if peers is None:
        return []
    bare, memory, variant = _rps(results, "bare_1"), _rps(results, "memory_1"), \
        _rps(results, "variant64_1")
    thumbor_o, thumbor_64 = _rps(results, "thumbor_original"), _rps(results, "thumbor_64")
    rows = []
    if "bare_1" in m:
        rows.append(wrk_row(m["bare_1"], "ceiling (one process)"))
    if "memory_1" in m:
        rows.append(wrk_row(m["memory_1"], f"{times(_over(memory, bare))} bare aiohttp"))
    if "variant64_1" in m:
        r = _over(variant, memory)
        rows.append(wrk_row(m["variant64_1"], f"{times(r)} its memory hits",
                            ">= 0.9x memory hits", None if r is None else r >= 0.9))
    if "thumbor_original" in m:
        r = _over(memory, thumbor_o)
        rows.append(wrk_row(m["thumbor_original"], f"gateway memory hits {times(r)}",
                            "gateway >= 10x", None if r is None else r >= 10))
    if "thumbor_64" in m:
        r = _over(variant, thumbor_64)
        rows.append(wrk_row(m["thumbor_64"], f"gateway cached 64x64 {times(r)}",
                            "gateway >= 10x", None if r is None else r >= 10))
    rows += _first_and_rss(peers)
    return rows


def _first_and_rss(peers: PeerFigures) -> list[Row]:
    rows = []
    gw, th = peers.first_median("gateway"), peers.first_median("thumbor")
    if gw is not None and th is not None:
        each = "; ".join(f"{k}: " + ", ".join(f"{v:.1f}" for v in vs)
                         for k, vs in peers.first_ms.items())
        rows.append(Row(f"first 96x96 transform, one request each on a new connection "
                        f"(median of {len(peers.first_ms['gateway'])} pictures)",
                        f"gateway {gw:.1f} ms, thumbor {th:.1f} ms", counts=f"ms each: {each}",
                        ratio=f"gateway {gw / th:.2f}x thumbor's time",
                        target="gateway no slower than thumbor", met=gw <= th * FIRST_SLACK))
    for label, figures in (("at rest (filled)", peers.rss_rest),
                           ("after the runs", peers.rss_after)):
        if figures:
            gw_rss, th_rss = figures.get("gateway"), figures.get("thumbor")
            rows.append(Row(f"RSS of one process {label} (gateway with memory.max_bytes of "
                            "the memory-hit run)",
                            ", ".join(f"{k} {mb(v)}" for k, v in figures.items()),
                            ratio=f"gateway {times(_over(gw_rss, th_rss))} thumbor"))
    return rows


def browser_rows(results: Results) -> list[Row]:
    headline = results.browser
    if headline is None:
        return []
    floor = _median(headline, "static")
    warm_old = _median(headline, "old_warm")
    rows = []
    for key, scenario in headline.scenarios.items():
        if not scenario.loads:
            continue
        value = scenario.median("ms")
        runs = " / ".join(f"{load.ms:.0f}" for load in scenario.loads)
        counts = (f"requests {scenario.median('requests'):.0f} (304: "
                  f"{scenario.median('not_modified'):.0f}), from the browser cache "
                  f"{scenario.median('from_cache'):.0f}, origin GETs "
                  f"{scenario.median('origin_gets'):.0f}"
                  + (f", failed {scenario.median('failed'):.0f}"
                     if any(load.failed for load in scenario.loads) else ""))
        ratio = "floor" if key == "static" else f"{times(_over(value, floor))} (f)"
        target, met = "-", None
        if key == "warm":
            r_old = _over(value, warm_old)
            ratio += f", {times(r_old)} (a) warm"
            r_floor = _over(value, floor)
            target = "<= 1.2x (f) and <= 0.5x (a) warm"
            met = (None if r_floor is None or r_old is None
                   else r_floor <= 1.2 and r_old <= 0.5)
        elif key == "reload":
            target = "no request reaches the gateway"
            met = all(load.requests == 0 for load in scenario.loads)
        layers = scenario.loads[-1].layers
        if layers:
            counts += "; gateway X-Cache (last run): " + ", ".join(
                f"{k} {v}" for k, v in sorted(layers.items()))
        rows.append(Row(f"browser, {headline.pictures} avatars: {scenario.title}",
                        f"{value:.0f} ms", counts=f"{counts}; each run (ms): {runs}",
                        ratio=ratio, target=target, met=met))
    return rows


def _median(headline: Headline, key: str) -> float | None:
    scenario = headline.scenarios.get(key)
    return scenario.median("ms") if scenario and scenario.loads else None


def notes(results: Results) -> list[str]:
    """How the peer and browser rows were measured (under the table)."""
    lines: list[str] = []
    if results.peers is not None:
        lines += [
            "", f"**Peers, one process each** (bench/thumbor_peer.py): thumbor "
            f"{results.peers.thumbor_version} from PyPI in its own venv "
            "(`bench/out/thumbor-venv`, made with the system python3; never a project "
            "dependency), file loader on `bench/out/images/` and file result storage "
            "(unsafe URLs stored too), started with `--processes 1`; beside it a gateway "
            "with one worker and a bare aiohttp with one process, on the same pictures "
            "with wrk 1 thread x 32 connections (wrk and the one server process get a core "
            "each; the issue's method). Every URL was requested once before the runs, "
            "so thumbor answers from its result storage (`/unsafe/{id}`, "
            "`/unsafe/64x64/{id}`) and the gateway from memory (`/images/{id}`, "
            "`/images/{id}?w=64&h=64`). The first transform is a 96x96 of a picture "
            "neither has transformed yet (the gateway holds its original in memory, "
            "thumbor reads it from disk), one request at a time on a new connection, the "
            "two servers taking turns; each had made one 64x64 of another picture first, "
            "so one-time costs (lazy imports, pools) are not in it.",
        ]
    headline = results.browser
    if headline is not None:
        lines += [
            "", f"**The seed's headline in a browser** (bench/browser_headline.py, "
            f"bench/friends.html): {headline.pictures} avatars on one page in headless "
            f"{headline.chromium}, {headline.runs} rounds of (a)-(f), medians shown. "
            "Timed by the page from navigation start until the last picture has loaded "
            "and decoded (`img.decode()`); the DevTools Network domain stays off. "
            "Requests are counted where they arrive: the gateway's access log, the page "
            "nginx's access log (static pictures, the old API under `/api/`), the "
            "counting proxy in front of S3 (the browser's presigned downloads by "
            "User-Agent, and the gateway's origin GETs). \"from the browser cache\" is "
            "pictures minus picture requests. In this phase the gateway (and nginx) send "
            f"`Cache-Control: max-age={headline.max_age}`, so (e) waits "
            f"{headline.max_age + 1} s instead of 45 minutes; (b) and (a) cold purge the "
            "50 pictures first (admin API: bytes, URL and metadata), and the browser "
            "cache is emptied (`Network.clearBrowserCache`) before (a), (b), (c) and (f). "
            "Between (b) and (c) the bench GETs each picture a few times over new "
            "connections, so that every worker (each has its own memory) holds it, as in "
            "a gateway that has served a while; the X-Cache counts show what answered.",
        ]
    return lines
