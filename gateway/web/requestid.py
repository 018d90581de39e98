"""X-Request-Id: the client's (or a proxy's) id when it is well-formed, else a new one.

Every answer carries one (the edge, web/edge.py, sets it), error bodies quote it
(web/errors.py) and the access log writes it, so a user's report can
be matched to a log line. A new id is a per-process random prefix and a counter:
unique across replicas and restarts without a uuid4 (and its urandom call) per
request. An incoming id is kept only if it is short and plain (``[A-Za-z0-9._:-]``,
1-128 characters): it is written into the log, so it must not be able to forge or
break a line.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping

HEADER = "X-Request-Id"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}").fullmatch

_prefix = ""
_counter: Iterator[int] = itertools.count(1)


def _reseed() -> None:
    """A new prefix and counter (at import, and in a forked child: it must not repeat
    its parent's ids)."""
    global _prefix, _counter
    _prefix = secrets.token_hex(6) + "-"
    _counter = itertools.count(1)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    return f"{_prefix}{next(_counter):x}"


def request_id_of(headers: Mapping[str, str],
                  well_formed: Callable[[str], object] = _WELL_FORMED) -> str:
    """The id of a request with these headers: its own if well-formed, else a new one."""
    incoming = headers.get(HEADER)
    if incoming is not None and well_formed(incoming):
        return incoming
    return new_request_id()
