"""The long-tail scenario's data and accounting (bench/longtail_data.py, bench/longtail.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from bench import longtail_data
from bench.longtail import measured_shares, section


def test_pictures_are_distinct_valid_and_of_the_drawn_sizes(tmp_path: Path) -> None:
    data = longtail_data.generate(tmp_path, 300, seed=5)
    assert len(data.names) == 300
    digests = set()
    for name, size in zip(data.names, data.sizes.tolist(), strict=True):
        body = (data.folder / name).read_bytes()
        assert len(body) == size
        digests.add(hashlib.sha256(body).hexdigest())
        with Image.open(data.folder / name) as img:
            img.load()
            assert img.format == ("JPEG" if name.endswith(".jpg") else "PNG")
    assert len(digests) == 300
    assert data.sizes.min() >= longtail_data.SIZE_MIN - 500
    assert data.sizes.max() <= longtail_data.SIZE_MAX + 500
    # a second call reuses the set (same manifest), a new seed writes another
    (data.folder / data.names[0]).write_bytes(b"kept")
    again = longtail_data.generate(tmp_path, 300, seed=5)
    assert (again.folder / again.names[0]).read_bytes() == b"kept"
    assert longtail_data.generate(tmp_path, 300, seed=6).folder != data.folder


def test_popularity_is_a_shuffled_zipf() -> None:
    probs = longtail_data.popularity(1000, 1.0, seed=1)
    assert np.isclose(probs.sum(), 1.0)
    ranked = np.sort(probs)[::-1]
    assert np.isclose(ranked[0] / ranked[9], 10.0)  # p(rank) ~ 1 / rank
    assert probs.argmax() != 0  # the most popular picture is not the first one


def test_wrk_segments_follow_paths_lua_offsets() -> None:
    ids = np.arange(800)
    got = longtail_data.wrk_segments(ids, 10, threads=2)
    # thread 0 starts after offset 0, thread 1 after (800 // 8 + 1) * 3 = 303
    assert got.tolist() == [1, 304, 2, 305, 3, 306, 4, 307, 5, 308]


def test_what_the_gateway_did_not_answer_the_micro_cache_did() -> None:
    shares = measured_shares(1000, {"memory": 200, "disk": 300, "miss": 10, "coalesced": 5})
    assert shares["micro"] == 0.485
    assert shares["memory"] == 0.2 and shares["disk"] == 0.3
    assert shares["miss"] == 0.015


def test_the_section_compares_model_and_measurement() -> None:
    wrk = {"rps": 1000.0, "latency_us": {"p50": 1000, "p99": 5000}, "errors": {"read": 0}}
    shares = {"cdn": 0.0, "micro": 0.5, "memory": 0.2, "disk": 0.3, "revalidated": 0.0,
              "miss": 0.0}
    lt = {"images": 100, "total_bytes": 1e6, "sizes": {"median": 6000, "min": 2000,
                                                       "max": 40000},
          "settings": {"zipf": 1.0, "memory_share": 0.1, "warm": 8.0},
          "memory_max_bytes": 100_000, "disk_max_bytes": 3e6, "workers": 2,
          "fill_rps_per_worker": 500.0, "gateway": wrk, "proxy_cache": wrk,
          "measured": shares, "model": {**shares, "memory": 0.27, "disk": 0.23},
          "exact": shares}
    text = "\n".join(section(lt))
    assert "| memory | 20.0 % | 27.0 % | 20.0 % | +7.0 pp |" in text
    assert "**outside**" in text
