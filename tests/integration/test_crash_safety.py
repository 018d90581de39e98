"""A gateway killed (SIGKILL) while it writes large blobs never answers a torn body.

The gateway runs as a real process (``python -m gateway``) with the S3 origin
behind the counting FaultProxy and its disk cache in a temp folder; it is killed
in the middle of a burst of large fetches, several times, and started again on
the same folder each time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

TEMP_PREFIX = ".tmp-"  # gateway/files.py names its temp files like this
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MiB = 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=30)


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def blob(rng: random.Random, size: int) -> bytes:
    """``size`` bytes the gateway accepts as a PNG: it sniffs the signature only."""
    return PNG_MAGIC + rng.randbytes(size - len(PNG_MAGIC))


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*") if p.is_file()]


def entry_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and len(p.name) == 64]


CUT = "(body cut short)"


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes] | None:
    """(status, X-Cache, body); None when the gateway was not there to answer.

    A body shorter than its Content-Length comes back with CUT appended to the
    X-Cache value: expected from a process killed mid-answer, torn otherwise.
    """
    try:
        async with session.get(url) as resp:
            layer = resp.headers.get("X-Cache", "")
            try:
                return resp.status, layer, await resp.read()
            except aiohttp.ClientPayloadError:
                return resp.status, f"{layer} {CUT}", b""
    except (TimeoutError, aiohttp.ClientError):
        return None  # refused or reset before an answer


def files(root: Path) -> set[str]:
    """Every file name under ``root`` (os.walk: cheap enough to poll every half ms)."""
    return {name for _, _, names in os.walk(root) for name in names}


def kill_when_writing(gw: Any, root: Path, fallback_after: float) -> None:
    """SIGKILL ``gw`` the moment a new temp file shows up under ``root`` (a write has
    just begun), or after ``fallback_after`` seconds. A write the polling missed (its
    entry appeared whole) does not trigger it: the next object's write will. Blocking:
    run it in a thread, so the polling is not slowed down by an event loop busy with
    response bodies."""
    before = files(root)
    deadline = time.monotonic() + fallback_after
    while time.monotonic() < deadline and not any(
            name.startswith(TEMP_PREFIX) for name in files(root) - before):
        time.sleep(0.0005)
    gw.kill()


@pytest.fixture
def quick_thread_switches() -> Iterator[None]:
    """The watcher thread must not wait 5 ms for the GIL while the event loop
    thread reads response bodies: a disk write takes about 10 ms."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(old)


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.usefixtures("quick_thread_switches")
async def test_sigkill_during_large_writes_never_serves_torn_body(spawn_gateway, s3, s3_proxy,
                                                                  tmp_path):
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    objects = {f"big-{i:02d}.png": blob(rng, rng.randint(1 * MiB, 4 * MiB)) for i in range(30)}
    for name, body in objects.items():
        s3.put(name, body)
    digests = {name: sha(body) for name, body in objects.items()}
    names = list(objects)
    group_a, group_b, group_c = names[:10], names[10:20], names[20:]
    root = tmp_path / "disk"

    gw = await asyncio.to_thread(spawn_gateway, {
        **s3.env(s3_proxy.url),
        "GATEWAY_DISK_PATH": str(root),
        "GATEWAY_SERVER_ACCESS_LOG": "false",
        "GATEWAY_ORIGIN_MAX_BYTES": "8MiB",
        # over 1 MiB the disk serves with sendfile; nothing large stays in memory
        "GATEWAY_MEMORY_MAX_OBJECT_BYTES": "1MiB",
        "GATEWAY_ORIGIN_READ_TIMEOUT": "20",
    })
    torn: list[str] = []
    caught_mid_write = 0
    layers: Counter[str] = Counter()

    def check(name: str, answer: tuple[int, str, bytes] | None, *, alive: bool) -> None:
        if answer is None or (not alive and answer[1].endswith(CUT)):
            return  # the kill came before or during this answer
        status, layer, body = answer
        assert status == 200, (name, status, body[:200], gw.stderr_text())
        layers[layer] += 1
        if sha(body) != digests[name] or len(body) != len(objects[name]):
            torn.append(f"{name} ({layer}, {len(body)} of {len(objects[name])} bytes)")

    # (objects requested, when to kill): a cold group is killed as its first
    # write begins; the other rounds mix disk hits, half-done fetches and a
    # kill at a random moment.
    rounds = [(group_a, "writing"), (group_a, "random"), (group_b, "writing"),
              (group_c, "writing"), (names, "random")]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=TIMEOUT) as session:
        for group, when in rounds:
            wanted = rng.sample(group, len(group))
            # a trickled body spreads the downloads, so their disk writes are spread too
            s3_proxy.slow_body(rng.choice([16, 32, 64]) * MiB)
            requests = [asyncio.create_task(fetch(session, f"{gw.url}/images/{name}"))
                        for name in wanted]
            if when == "writing":
                await asyncio.to_thread(kill_when_writing, gw, root, 3.0)
                caught_mid_write += bool(temp_files(root))  # a write the kill cut short
            else:  # after the first answer (so some entry is complete), at a random moment
                await asyncio.wait(requests, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                await asyncio.sleep(rng.uniform(0, 0.3))
                gw.kill()
            for name, answer in zip(wanted, await asyncio.gather(*requests), strict=True):
                check(name, answer, alive=False)
            s3_proxy.heal()
            await gw.astart()  # same port, same disk folder

        # Every object, after the last restart: from disk where a write completed.
        answers = await asyncio.gather(*(fetch(session, f"{gw.url}/images/{name}")
                                         for name in objects))
        for name, answer in zip(objects, answers, strict=True):
            assert answer is not None, (name, gw.stderr_text())
            check(name, answer, alive=True)

    context = f"seed {seed}, layers {dict(layers)}"
    assert torn == [], f"torn bodies served: {torn} ({context})"
    assert layers["HIT-DISK"] > 0, f"nothing was served from disk ({context})"
    assert caught_mid_write > 0, f"no kill landed during a disk write ({context})"
    # The last start-up swept what the kills left behind.
    assert temp_files(root) == [], (
        f"temp files left after restart: {[p.name for p in temp_files(root)]} ({context})")


@pytest.mark.timeout(60)
async def test_temp_file_of_killed_writer_is_removed_at_restart(spawn_gateway, s3, s3_proxy,
                                                                tmp_path):
    """What a SIGKILL between the temp file's creation and its rename leaves behind,
    planted deterministically: a fresh, half-written temp file next to an entry."""
    body = blob(random.Random(1), 64 * 1024)
    s3.put("t.png", body)
    root = tmp_path / "disk"
    gw = await asyncio.to_thread(spawn_gateway, {
        **s3.env(s3_proxy.url),
        "GATEWAY_DISK_PATH": str(root),
        "GATEWAY_SERVER_ACCESS_LOG": "false",
    })
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        answer = await fetch(session, f"{gw.url}/images/t.png")
        assert answer is not None and answer[0] == 200
        (entry,) = entry_files(root)
        gw.kill()
        old = entry.parent / f"{TEMP_PREFIX}0123456789abcdef"
        fresh = entry.parent / f"{TEMP_PREFIX}fedcba9876543210"
        for temp in (old, fresh):
            temp.write_bytes(entry.read_bytes()[:1000])
        an_hour_ago = time.time() - 3600
        os.utime(old, (an_hour_ago, an_hour_ago))
        await gw.astart()
        answer = await fetch(session, f"{gw.url}/images/t.png")
        assert answer is not None and answer[:2] == (200, "HIT-DISK")
        assert sha(answer[2]) == sha(body)
    assert not old.exists(), "an old temp file survived the restart"
    assert not fresh.exists(), (
        "a temp file left by a process killed a moment ago survived the restart "
        "(the writer is dead: nothing else will ever rename or remove it)")
    assert entry_files(root) == [entry]
