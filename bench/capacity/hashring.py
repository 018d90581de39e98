"""nginx's ``hash ... consistent`` (ketama) upstream choice, point for point.

From ngx_http_upstream_hash_module.c (ngx_http_upstream_update_chash and
ngx_http_upstream_find_chash_point): each server of weight w gets 160*w
points on a 32-bit ring. A server named "host:port" (as written in the
upstream block) has a base CRC32 over host, one NUL byte, then port; point j
is CRC32(base + the previous point's hash as 4 little-endian bytes), the
first one chained from 0. The points are sorted, equal hashes kept once.
A request's key (here ``$uri``) is hashed with CRC32 and goes to the first
point at or above that hash, wrapping to the first point. Retries after a
failed replica (the next points) are not modelled: the model assumes every
replica is up.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

POINTS_PER_WEIGHT = 160


def _host_port(server: str) -> tuple[bytes, bytes]:
    raw = server.encode()
    if raw[:5].lower() == b"unix:":
        return raw[5:], b""
    host, sep, port = raw.rpartition(b":")
    if sep and port.isdigit():
        return host, port
    return raw, b""


def server_points(server: str, weight: int = 1) -> list[int]:
    host, port = _host_port(server)
    base = host + b"\0" + port
    points = []
    prev = 0
    for _ in range(POINTS_PER_WEIGHT * weight):
        prev = zlib.crc32(prev.to_bytes(4, "little"), zlib.crc32(base))
        points.append(prev)
    return points


class KetamaRing:
    """The ring of ``servers`` (names as in nginx's upstream block, e.g. "gw-1:8080")."""

    def __init__(self, servers: Sequence[str]) -> None:
        if not servers:
            raise ValueError("a ring needs at least one server")
        self.servers = list(servers)
        pairs = sorted((h, i) for i, s in enumerate(self.servers) for h in server_points(s))
        hashes: list[int] = []
        owners: list[int] = []
        for h, i in pairs:
            if hashes and hashes[-1] == h:
                continue  # nginx keeps the first of equal points
            hashes.append(h)
            owners.append(i)
        self._hashes = np.array(hashes, dtype=np.uint64)
        self._owners = np.array(owners, dtype=np.int32)

    def route_hashes(self, key_hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int32]:
        at = np.searchsorted(self._hashes, key_hashes, side="left")
        at[at == len(self._hashes)] = 0
        return self._owners[at]

    def route(self, keys: Iterable[str]) -> npt.NDArray[np.int32]:
        """The server index each key (a ``$uri``) goes to."""
        hashes = np.fromiter((zlib.crc32(k.encode()) for k in keys), dtype=np.uint64)
        return self.route_hashes(hashes)


def replica_names(count: int) -> list[str]:
    """The upstream names the model uses: those of deploy/nginx.conf's pattern."""
    return [f"gateway-{i + 1}:8080" for i in range(count)]
