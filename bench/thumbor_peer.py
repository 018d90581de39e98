"""thumbor (PyPI), the Python peer, on the same pictures in the same run.

thumbor goes into its own venv under bench/out/ (never a project dependency), made
with the system python3 and kept between runs. It reads the pictures with its file
loader from the folder the bench generated and keeps its answers in file result
storage (unsafe URLs too), so a repeated URL is a result-storage hit: its fastest
path, the counterpart of the gateway's cached original and cached variant.

One thumbor process against one gateway worker (and one bare aiohttp process as
the ceiling), so the ratios compare what one Python process does:

    cached originals   thumbor /unsafe/{id}          gateway /images/{id}
    cached 64x64       thumbor /unsafe/64x64/{id}    gateway /images/{id}?w=64&h=64
    first transform    one new 96x96 per picture, each timed alone
    RSS                of each process at rest (after filling) and after the runs
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp

from bench import stack
from bench.images import Picture
from bench.procs import ManagedProcess, rss_bytes, session_pids
from bench.results import IMAGES_DIR, OUT, RUN_DIR, PeerFigures
from tests.support import free_port

THUMBOR_VERSION = "7.8.0"  # the newest on PyPI when this was written; supports 3.11
VENV = OUT / "thumbor-venv"
FIRST_TRANSFORMS = 15  # pictures whose first 96x96 is timed (median reported)

CONF = """\
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {images!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = 'thumbor.result_storages.file_storage'
RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = {results!r}
RESULT_STORAGE_STORES_UNSAFE = True
RESULT_STORAGE_EXPIRATION_SECONDS = 0
ALLOW_UNSAFE_URL = True
SECURITY_KEY = 'bench-only'
"""


def system_python() -> str:
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("no system python3 to make thumbor's venv with")


def ensure_venv(say: Callable[[str], None]) -> Path:
    """bench/out/thumbor-venv with thumbor==THUMBOR_VERSION; made once, then reused."""
    marker = VENV / f".thumbor-{THUMBOR_VERSION}"
    binary = VENV / "bin" / "thumbor"
    if marker.exists() and binary.exists():
        return binary
    say(f"installing thumbor {THUMBOR_VERSION} into {VENV.relative_to(OUT.parent.parent)} "
        "(once; kept between runs)")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([system_python(), "-m", "venv", str(VENV)], check=True)
    proc = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                           f"thumbor=={THUMBOR_VERSION}"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install thumbor=={THUMBOR_VERSION} failed:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    marker.touch()
    return binary


def start_thumbor(outer: contextlib.ExitStack, binary: Path) -> tuple[str, ManagedProcess]:
    work = RUN_DIR / "thumbor"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    conf = work / "thumbor.conf"
    conf.write_text(CONF.format(images=str(IMAGES_DIR), results=str(work / "result-storage")))
    port = free_port()
    proc = ManagedProcess([str(binary), "--port", str(port), "--ip", "127.0.0.1",
                           "--conf", str(conf), "--processes", "1", "--log-level", "warning"],
                          work / "thumbor.log")
    outer.callback(proc.stop)
    url = f"http://127.0.0.1:{port}"
    asyncio.run(_until_up(f"{url}/healthcheck", proc))
    return url, proc


async def _until_up(url: str, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"thumbor did not start:\n{proc.log_text()[-3000:]}")
            await asyncio.sleep(0.1)


async def _get_all(base: str, paths: Sequence[str], concurrency: int = 8) -> dict[int, int]:
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def one(path: str) -> None:
            async with gate, http.get(base + path) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

        await asyncio.gather(*(one(p) for p in paths))
    return statuses


def fill(base: str, paths: Sequence[str]) -> None:
    """GET every path once (thumbor writes its result storage, the gateway its caches)."""
    statuses = asyncio.run(_get_all(base, paths))
    if set(statuses) != {200}:
        raise RuntimeError(f"filling {base}: statuses {statuses}")


async def _timed_one(url: str) -> float:
    # a new connection per request, as a first visitor's would be; its setup is timed too
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        start = time.perf_counter()
        async with http.get(url) as resp:
            await resp.read()
            elapsed = time.perf_counter() - start
            if resp.status != 200:
                raise RuntimeError(f"{url}: {resp.status}")
    return elapsed * 1000


def first_transforms(gateway: str, thumbor: str, pictures: Sequence[Picture]
                     ) -> dict[str, list[float]]:
    """A 96x96 of each picture from each server, one request at a time, alone on the
    server: milliseconds each. The two take turns going first, so that whatever else
    the machine does weighs on both alike."""
    out: dict[str, list[float]] = {"gateway": [], "thumbor": []}
    for number, picture in enumerate(pictures):
        turns = [("gateway", f"{gateway}/images/{picture.image_id}?w=96&h=96"),
                 ("thumbor", f"{thumbor}/unsafe/96x96/{picture.image_id}")]
        for name, url in turns if number % 2 == 0 else reversed(turns):
            out[name].append(asyncio.run(_timed_one(url)))
    return out


def serving_rss(sid: int) -> int:
    """RSS of the largest process of a session: the one that serves."""
    return max((rss_bytes(pid) for pid in session_pids(sid)), default=0)


def variant_paths(pictures: Sequence[Picture], query: str) -> list[str]:
    return [f"/images/{p.image_id}?{query}" for p in pictures]


def thumbor_paths(pictures: Sequence[Picture], size: str = "") -> list[str]:
    head = f"/unsafe/{size}/" if size else "/unsafe/"
    return [f"{head}{p.image_id}" for p in pictures]


class PeersPhase:
    """Runs in bench/run.py's ExitStack; fills ``results.measures`` and returns the rest.

    ``measure(key, title, server, url, paths, headers)`` is the Runner's wrk run;
    ``start_gateway(stack, name)`` starts a one-worker gateway: (url, its session id).
    """

    def __init__(self, say: Callable[[str], None],
                 measure: Callable[..., object],
                 start_gateway: Callable[[contextlib.ExitStack, str], tuple[str, int]]
                 ) -> None:
        self.say = say
        self.measure = measure
        self.start_gateway = start_gateway

    def run(self, phase: contextlib.ExitStack, pictures: Sequence[Picture]) -> PeerFigures:
        figures = PeerFigures(THUMBOR_VERSION)
        binary = ensure_venv(self.say)
        warm, timed = pictures[0], list(pictures[1:FIRST_TRANSFORMS + 1])
        rest = list(pictures[FIRST_TRANSFORMS + 1:])
        originals = [f"/images/{p.image_id}" for p in rest]
        self.say("peers: thumbor, a one-worker gateway and a one-process bare aiohttp")
        thumbor_url, thumbor = start_thumbor(phase, binary)
        gw_url, gw_sid = self.start_gateway(phase, "gateway-1-worker")
        bare_url, bare = stack.start_bare_aiohttp(phase, RUN_DIR / "bare-1", IMAGES_DIR, 1)
        # session ids: bare aiohttp serves from a child process even with one worker
        servers = {"thumbor": thumbor.pid, "gateway": gw_sid, "bare aiohttp": bare.pid}

        # First transforms of a new size, on servers that have done one transform
        # (of another picture and size): lazy imports and pools are not counted.
        fill(gw_url, [f"/images/{p.image_id}" for p in (warm, *timed)])  # originals cached
        fill(gw_url, [f"/images/{warm.image_id}?w=64&h=64"])
        fill(thumbor_url, [f"/unsafe/64x64/{warm.image_id}"])
        figures.first_ms = first_transforms(gw_url, thumbor_url, timed)

        self.say("  filling: thumbor result storage, the gateway's originals and 64x64")
        fill(thumbor_url, thumbor_paths(rest))
        fill(thumbor_url, thumbor_paths(rest, "64x64"))
        fill(gw_url, originals)
        fill(gw_url, variant_paths(rest, "w=64&h=64"))
        for name, pid in servers.items():
            figures.rss_rest[name] = serving_rss(pid)

        self.measure("bare_1", "bare aiohttp handler, 1 process (ceiling)", "aiohttp",
                     bare_url, originals, None)
        self.measure("memory_1", "gateway, 1 worker, memory hits", "gateway", gw_url,
                     originals)
        self.measure("variant64_1", "gateway, 1 worker, cached 64x64 variant", "gateway",
                     gw_url, variant_paths(rest, "w=64&h=64"))
        self.measure("thumbor_original", f"thumbor {THUMBOR_VERSION}, 1 process, "
                     "original from result storage", "thumbor", thumbor_url,
                     thumbor_paths(rest), None)
        self.measure("thumbor_64", f"thumbor {THUMBOR_VERSION}, 1 process, 64x64 from "
                     "result storage", "thumbor", thumbor_url,
                     thumbor_paths(rest, "64x64"), None)
        for name, pid in servers.items():
            figures.rss_after[name] = serving_rss(pid)
        self.say("  first 96x96 (ms, each): " + "; ".join(
            f"{k} {', '.join(f'{v:.1f}' for v in vs)}" for k, vs in figures.first_ms.items()))
        self.say("  RSS after the runs: " + ", ".join(
            f"{k} {v / 1e6:.0f} MB" for k, v in figures.rss_after.items()))
        return figures

