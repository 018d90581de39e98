"""Hosts on one switch, as network namespaces (iproute2: ``ip netns`` + veth + a bridge).

    with Topology(["redis", "s3", "gw1", "gw2"]) as net:
        net.address("gw1")            # "10.N.0.11"-like, on the hosts' own /24
        net.prefix("gw1")             # ["ip", "netns", "exec", NAME]: run a program there
        net.cut("gw1", "redis")       # packets between them vanish (silent, both ways)
        net.isolate("redis")          # its link down: nobody reaches it, silently
        net.heal()                    # every cut and isolation undone

The test's own process stays in the root namespace and reaches every host through one
more veth into the switch (the ``edge`` address, .1). Everything gets a random name and
a /24 of 10.0.0.0/8 that no route of this machine uses, so tests running side by side
never meet; ``close()`` (also on failure) removes the namespaces, which takes their
veths and bridge with them, and the root side veth. Programs started in a namespace
must be stopped before ``close()``: a process outlives its namespace.

``skip_reason()`` says why the kernel refuses to make a namespace here (not root, a
container without CAP_SYS_ADMIN...), else None.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import subprocess
from types import TracebackType

IP = shutil.which("ip") or "/usr/sbin/ip"
IPTABLES = shutil.which("iptables") or "/usr/sbin/iptables"


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([IP, *args], check=check)


def skip_reason() -> str | None:
    """Why the kernel refuses network namespaces here (None: it does not). Missing
    programs are no reason to skip: ``make system-deps`` installs them."""
    for program, package in ((IP, "iproute2"), (IPTABLES, "iptables")):
        if not os.access(program, os.X_OK):
            raise RuntimeError(f"{program} is missing: `make system-deps` installs {package}")
    name = f"gwprobe{secrets.token_hex(3)}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"the kernel refuses network namespaces: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def _free_subnet() -> str:
    used = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr").stdout
    for _ in range(200):
        second = random.randint(100, 250)
        third = random.randint(1, 250)
        subnet = f"10.{second}.{third}"
        if f"{subnet}." not in used and f"10.{second}.0.0/16" not in used:
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


class Topology:
    def __init__(self, hosts: list[str]) -> None:
        self.tag = secrets.token_hex(3)  # in every name: ns, veth
        self.subnet = _free_subnet()
        self.hosts = list(hosts)
        self.switch = f"gwt{self.tag}-sw"
        self._veth: dict[str, str] = {}
        self._cuts: list[tuple[str, str]] = []
        self._isolated: set[str] = set()
        self._made: list[str] = []
        self._root_veth = f"gw{self.tag}r0"
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- names and addresses -----------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"gwt{self.tag}-{host}"

    def address(self, host: str) -> str:
        if host == "edge":
            return f"{self.subnet}.1"
        return f"{self.subnet}.{10 + self.hosts.index(host)}"

    def prefix(self, host: str) -> list[str]:
        return [IP, "netns", "exec", self.ns(host)]

    # -- faults ------------------------------------------------------------------------

    def cut(self, host: str, other: str) -> None:
        """Packets between ``host`` and ``other`` vanish, both ways (iptables DROP in
        ``host``'s namespace): connections time out instead of being refused."""
        peer = f"{self.address(other)}/32"
        for chain, way in (("INPUT", "-s"), ("OUTPUT", "-d")):
            _run([*self.prefix(host), IPTABLES, "-A", chain, way, peer, "-j", "DROP"])
        self._cuts.append((host, other))

    def isolate(self, host: str) -> None:
        """``host``'s link to the switch goes down: nothing reaches it, silently."""
        _ip("-n", self.switch, "link", "set", self._veth[host] + "s", "down")
        self._isolated.add(host)

    def heal(self) -> None:
        for host in {host for host, _ in self._cuts}:
            _run([*self.prefix(host), IPTABLES, "-F"])  # only ours: a fresh namespace
        self._cuts.clear()
        for host in self._isolated:
            _ip("-n", self.switch, "link", "set", self._veth[host] + "s", "up")
        self._isolated.clear()

    # -- life cycle ----------------------------------------------------------------------

    def _build(self) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, host in enumerate(self.hosts):
            name = self.ns(host)
            _ip("netns", "add", name)
            self._made.append(name)
            veth = f"gw{self.tag}h{index}"  # 11 characters: within IFNAMSIZ
            self._veth[host] = veth
            _ip("link", "add", veth, "type", "veth", "peer", "name", veth + "s")
            _ip("link", "set", veth, "netns", name)
            _ip("link", "set", veth + "s", "netns", self.switch)
            _ip("-n", self.switch, "link", "set", veth + "s", "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{self.address(host)}/24", "dev", veth)
            _ip("-n", name, "link", "set", veth, "up")
            _ip("-n", name, "link", "set", "lo", "up")
        root = self._root_veth
        _ip("link", "add", root, "type", "veth", "peer", "name", root + "s")
        _ip("link", "set", root + "s", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", root + "s", "master", "br0", "up")
        _ip("addr", "add", f"{self.address('edge')}/24", "dev", root)
        _ip("link", "set", root, "up")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            _ip("link", "del", self._root_veth, check=False)
        for name in reversed(self._made):
            with contextlib.suppress(Exception):
                _ip("netns", "del", name, check=False)
        self._made.clear()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
