"""gateway.observe.hub: workers publishing to a shared folder and read as one.

The "other worker" is a hub in this process given the pid of a real process
the test starts (``sleep``), so liveness checks see a live pid, and a dead one
once the test ends that process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.config import Config
from gateway.observe.counters import Stats
from gateway.observe.hub import StatsHub
from gateway.observe.recorder import Recorder
from gateway.observe.report import build_report


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def memory_figures():
    """What the owner of a hub with an empty 1000-byte memory cache supplies."""
    return {}, {"memory.bytes": 0, "memory.entries": 0, "memory.limit": 1000}


def make_hub(shared, pid=None, clock_start=1000.0, on_clear=None, figures=memory_figures):
    stats = Stats()
    recorder = Recorder()
    now = [clock_start]
    hub = StatsHub(stats=stats, recorder=recorder, figures=figures,
                   redis_health=None, shared_dir=shared, on_clear=on_clear,
                   clock=lambda: now[0])
    if pid is not None:
        hub.pid = pid
        hub.file_name = f"w-{pid}-{int(hub.started * 1e6)}.json"
    hub.now = now  # the test moves the clock
    return hub


def traffic(hub, layer: str, n: int, image_id: str = "a.png") -> None:
    for _ in range(n):
        hub.recorder.request("/images/{image_id}", 200)
        hub.recorder.answer(layer, 0.001, 10, image_id)
        if layer == "HIT-MEMORY":
            hub.stats.memory.hits += 1


async def test_single_process_needs_no_folder():
    hub = make_hub(None)
    traffic(hub, "HIT-MEMORY", 3)
    aggregate = await hub.aggregate()
    assert aggregate.totals.answers_by_layer() == {"HIT-MEMORY": 3}
    assert [w.this for w in aggregate.workers] == [True]
    await hub.publish()  # nothing to write: no error


async def test_figures_of_the_owner_join_the_snapshot_and_add_up(tmp_path, sleeper):
    retries = [0]

    def figures():
        return ({"origin.retries": retries[0]},
                {"memory.limit": 1000, "disk.bytes": 10 + retries[0]})

    a = make_hub(tmp_path, figures=figures)
    b = make_hub(tmp_path, pid=sleeper.pid, figures=figures)
    retries[0] = 2  # read when a snapshot is taken, not when the hub is built
    await b.publish()
    snapshot = a.snapshot()
    assert snapshot.counters["origin.retries"] == 2
    assert snapshot.gauges == {"memory.limit": 1000, "disk.bytes": 12}
    totals = (await a.aggregate()).totals
    assert totals.counter("origin.retries") == 4  # counters add up
    assert totals.gauges["memory.limit"] == 2000  # one LRU per worker
    assert totals.gauges["disk.bytes"] == 12  # one shared folder: the largest view


async def test_two_workers_add_up_and_a_dead_one_is_retired(tmp_path, sleeper):
    a = make_hub(tmp_path)
    b = make_hub(tmp_path, pid=sleeper.pid)
    traffic(a, "HIT-MEMORY", 3)
    traffic(b, "HIT-MEMORY", 4)
    traffic(b, "MISS", 1, "b.png")
    await a.publish()
    await b.publish()

    aggregate = await a.aggregate()
    totals = aggregate.totals
    assert totals.answers_by_layer() == {"HIT-MEMORY": 7, "MISS": 1}
    assert totals.counter("stats.memory.hits") == 7
    assert totals.counter("http|/images/{image_id}|200") == 8
    assert totals.gauges["memory.limit"] == 2000  # one LRU per worker: limits add up
    assert totals.top == {"a.png": 7, "b.png": 1}
    assert sorted(w.pid for w in aggregate.workers if w.live) == sorted([a.pid, b.pid])
    # the other side sees the same totals (its own live, ours from the file)
    assert (await b.aggregate()).totals.answers_by_layer() == {"HIT-MEMORY": 7, "MISS": 1}

    sleeper.kill()
    sleeper.wait()
    for _ in range(2):  # retired once, not counted twice
        aggregate = await a.aggregate()
        assert aggregate.totals.answers_by_layer() == {"HIT-MEMORY": 7, "MISS": 1}
        assert [w.pid for w in aggregate.workers] == [a.pid]
        assert aggregate.totals.gauges["memory.limit"] == 1000  # gauges: live ones only
        assert aggregate.totals.top == {"a.png": 3}
    assert (tmp_path / "retired.json").exists()
    assert not list(tmp_path.glob(f"w-{sleeper.pid}-*.json"))


async def test_stale_worker_file_keeps_counters_but_not_gauges(tmp_path, sleeper):
    a = make_hub(tmp_path)
    b = make_hub(tmp_path, pid=sleeper.pid)
    traffic(b, "MISS", 2)
    await b.publish()
    a.now[0] += 60  # b has not published for a minute (stuck): not live
    aggregate = await a.aggregate()
    assert aggregate.totals.answers_by_layer() == {"MISS": 2}
    assert aggregate.totals.gauges["memory.limit"] == 1000
    assert [w.live for w in aggregate.workers] == [True, False]


async def test_pid_reuse_retires_the_older_file(tmp_path, sleeper):
    a = make_hub(tmp_path)
    old = make_hub(tmp_path, pid=sleeper.pid, clock_start=1000.0)
    traffic(old, "MISS", 2)
    await old.publish()
    new = make_hub(tmp_path, pid=sleeper.pid, clock_start=2000.0)
    new.started, new.file_name = 2000.0, f"w-{sleeper.pid}-{int(2000.0 * 1e6)}.json"
    traffic(new, "HIT-MEMORY", 1)
    await new.publish()
    aggregate = await a.aggregate()
    assert aggregate.totals.answers_by_layer() == {"MISS": 2, "HIT-MEMORY": 1}
    assert len(aggregate.workers) == 2  # a and the newer file of that pid


async def test_reset_applies_to_every_worker(tmp_path, sleeper):
    a = make_hub(tmp_path)
    b = make_hub(tmp_path, pid=sleeper.pid)
    traffic(a, "HIT-MEMORY", 2)
    traffic(b, "MISS", 3, "b.png")
    await b.publish()

    baseline = await a.reset()
    assert baseline.generation == 1
    assert a.recorder.top.top(5) == []  # cleared at once here
    report = build_report(await a.aggregate(), await a.baseline(), Config())
    assert report["requests"]["answers"] == 0
    assert report["top_images"] == []  # b has not cleared its top list yet: not shown

    await b.tick()  # b sees the new generation: clears its top list, publishes
    assert b.reset_generation == 1 and b.recorder.top.top(5) == []
    traffic(b, "HIT-MEMORY", 1, "c.png")
    await b.publish()
    report = build_report(await a.aggregate(), await a.baseline(), Config())
    assert report["requests"]["answers"] == 1
    assert report["top_images"] == [{"image_id": "c.png", "requests": 1}]
    # the other worker reads the same baseline
    report_b = build_report(await b.aggregate(), await b.baseline(), Config())
    assert report_b["requests"]["answers"] == 1


async def test_clear_command_reaches_other_workers_once(tmp_path, sleeper):
    calls = []

    async def cleared():
        calls.append(1)

    a = make_hub(tmp_path)
    b = make_hub(tmp_path, pid=sleeper.pid, on_clear=cleared)
    await b.tick()
    assert calls == []
    await a.request_clear()
    await b.tick()
    await b.tick()
    assert calls == [1]
    # a worker started after the command does not act on it
    c = make_hub(tmp_path, pid=sleeper.pid, on_clear=cleared)
    await c.start()
    await c.tick()
    await c.close()
    assert calls == [1]


async def test_unreadable_files_are_skipped(tmp_path, sleeper, caplog):
    a = make_hub(tmp_path)
    traffic(a, "MISS", 1)
    (tmp_path / f"w-{sleeper.pid}-1.json").write_text("{not json")
    (tmp_path / f"w-{sleeper.pid}-2.json").write_text(json.dumps({"pid": "x"}))
    aggregate = await a.aggregate()
    assert aggregate.totals.answers_by_layer() == {"MISS": 1}
    assert "unreadable stats file" in caplog.text


async def test_history_windows(tmp_path):
    hub = make_hub(None, clock_start=1000.0)
    hub.sample()  # t=1000
    traffic(hub, "HIT-MEMORY", 3)
    traffic(hub, "MISS", 1)
    hub.now[0] = 1005.5
    hub.sample()  # t=1005: 4 answers in (1000, 1005]
    hub.sample()  # same step: no new point
    traffic(hub, "HIT-MEMORY", 2)
    hub.now[0] = 1007.0
    history = (await hub.aggregate()).history
    assert [(w.t, w.answers, w.hits) for w in history] == [
        (1000.0, 0, 0), (1005.0, 4, 3), (1007.0, 2, 2)]
    assert history[-1].seconds == 2.0
