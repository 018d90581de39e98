"""X-Request-Id: which incoming ids are kept, and what a new one looks like."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.web import requestid
from gateway.web.requestid import new_request_id, request_id_of


@pytest.mark.parametrize("incoming", [
    "a", "req-1:a.B_9", "4bf92f3577b34da6a3ce929d0e0e4736", "x" * 128,
    "00-4bf92f3577b34da6-01"])
def test_a_well_formed_id_is_kept(incoming):
    assert request_id_of({"X-Request-Id": incoming}) == incoming


@pytest.mark.parametrize("incoming", [
    "", "x" * 129, "a b", "a\nb", 'a"b', "a/b", "é", "a\tb", "{x}", "a,b"])
def test_anything_else_gets_a_new_one(incoming):
    got = request_id_of({"X-Request-Id": incoming})
    assert got != incoming
    assert got.startswith(requestid._prefix)


def test_new_ids_are_unique_and_plain():
    ids = [request_id_of({}) for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(requestid._WELL_FORMED(i) for i in ids)  # a gateway behind us keeps ours


def test_each_process_has_its_own_prefix():
    code = "from gateway.web.requestid import new_request_id as n; print(n())"
    others = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip() for _ in range(2)}
    mine = new_request_id()
    prefixes = {i.rsplit("-", 1)[0] for i in {*others, mine}}
    assert len(prefixes) == 3


def test_a_forked_child_reseeds():
    before = requestid._prefix
    requestid._reseed()  # what os.register_at_fork runs in the child
    assert requestid._prefix != before
    assert new_request_id() == requestid._prefix + "1"
