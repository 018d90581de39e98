"""The client's address: X-Forwarded-For is believed only from a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    def __init__(self, trusted: Iterable[str]) -> None:
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def of(self, peer: str | None, forwarded_for: str | None) -> str:
        """Walk X-Forwarded-For from the right while hops are trusted proxies; the
        first untrusted hop is the client (anything left of it is client-supplied)."""
        address = peer or "-"
        if not forwarded_for or not self._is_trusted(address):
            return address
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return address  # garbage in the chain: stop at the last good hop
            address = hop
            if not self._is_trusted(hop):
                break
        return address
