"""nginx's consistent hash as the capacity model routes (the real nginx agrees:
tests/integration/test_capacity_routing.py)."""

from __future__ import annotations

import zlib

import numpy as np

from bench.capacity.hashring import KetamaRing, replica_names, server_points

URIS = [f"/images/avatar-{i:06d}.jpg" for i in range(20_000)]


def test_points_chain_crc32_from_host_nul_port() -> None:
    points = server_points("gateway-1:8080")
    assert len(points) == 160
    # the base is host + NUL + port; the first point appends four zero bytes
    first = zlib.crc32(b"gateway-1\x008080" + bytes(4))
    assert points[0] == first
    assert points[1] == zlib.crc32(b"gateway-1\x008080" + first.to_bytes(4, "little"))


def test_keys_spread_roughly_evenly() -> None:
    owners = KetamaRing(replica_names(4)).route(URIS)
    counts = np.bincount(owners, minlength=4) / len(URIS)
    assert counts.min() > 0.15 and counts.max() < 0.35


def test_adding_a_replica_moves_about_one_in_n_keys_and_only_to_it() -> None:
    before = KetamaRing(replica_names(4)).route(URIS)
    after = KetamaRing(replica_names(5)).route(URIS)
    moved = before != after
    assert 0.10 < moved.mean() < 0.30
    assert set(after[moved].tolist()) == {4}


def test_a_key_goes_to_the_first_point_at_or_above_its_hash() -> None:
    ring = KetamaRing(["a:1", "b:2"])
    points = sorted((h, i) for i, s in enumerate(["a:1", "b:2"]) for h in server_points(s))
    for uri in URIS[:200]:
        h = zlib.crc32(uri.encode())
        owner = next((i for p, i in points if p >= h), points[0][1])
        assert ring.route([uri])[0] == owner
