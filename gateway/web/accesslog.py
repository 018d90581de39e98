"""Access log: one JSON object a line (or the classic format, by setting).

Both formats carry the same facts: the client (X-Forwarded-For believed only
from a trusted proxy, see clientaddr.py), the request (its target as sent, still
percent-encoded: decoded, ``user%2F42`` and ``user/42`` would read alike though they
name different things), the status, the body bytes, the layer that answered (as
recorded on the request, web/keys.ANSWER_LAYER; "-" for an answer that is neither
a picture nor an error, such as /healthz or /url), the duration, the request id
(``X-Request-Id``, web/requestid.py) and, when the request was traced, its trace
id. The lines go to stdout through the ``gateway.access`` logger with nothing
around them, so a log shipper can read the JSON as it is; the
service's own log stays on stderr.

    {"ts":1718000000.123,"client":"203.0.113.7","method":"GET","path":"/images/a.png",
     "status":200,"bytes":5120,"layer":"HIT-MEMORY","ms":0.412,"ua":"...","pid":4242,
     "request_id":"9f2c4e1a7b3d-2a","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}

    203.0.113.7 - - [10/Jun/2024:06:13:20 +0000] "GET /images/a.png HTTP/1.1" 200 5120
     "-" "Mozilla/5.0 ..." HIT-MEMORY 0.000412 9f2c4e1a7b3d-2a - (one line; the last
     field is the trace id, "-" when none)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO, Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from gateway.config import ServerConfig
from gateway.web.clientaddr import ClientAddress
from gateway.web.keys import ANSWER_LAYER, TRACE_ID
from gateway.web.requestid import HEADER as REQUEST_ID

ACCESS_LOGGER = "gateway.access"
_NO_BODY = frozenset({204, 304})


def body_bytes(request: BaseRequest, response: StreamResponse) -> int:
    """Body bytes of a response: its Content-Length (sendfile included), 0 for HEAD,
    304 and 204. (``response.body_length`` counts the header bytes too, and misses
    bytes sent with sendfile.)"""
    if request.method == "HEAD" or response.status in _NO_BODY or response.status < 200:
        return 0
    length = response.content_length
    return response.body_length if length is None else length


def _quoted(text: str) -> str:
    """For the classic line: no quote, backslash or control character left raw."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    if out.isprintable():
        return out
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in out)


def make_access_logger(client_address: ClientAddress,
                       fmt: str = "json") -> type[AbstractAccessLogger]:
    pid = os.getpid()
    json_format = fmt == "json"

    class GatewayAccessLogger(AbstractAccessLogger):
        @property
        def enabled(self) -> bool:
            return self.logger.isEnabledFor(logging.INFO)

        def log(self, request: BaseRequest, response: StreamResponse, time_: float) -> None:
            headers = request.headers
            client = client_address.of(request.remote, headers.get("X-Forwarded-For"))
            answered = request.get(ANSWER_LAYER)  # recorded by whoever made the answer
            layer = "-" if answered is None else answered.value
            size = body_bytes(request, response)
            # The edge gives every answer one; "-" for one that never passed it.
            request_id = response.headers.get(REQUEST_ID, "-")
            trace_id = request.get(TRACE_ID)
            if json_format:
                record = {
                    "ts": round(time.time(), 3),
                    "client": client,
                    "method": request.method,
                    "path": request.raw_path,
                    "status": response.status,
                    "bytes": size,
                    "layer": layer,
                    "ms": round(time_ * 1000, 3),
                    "ua": headers.get("User-Agent", ""),
                    "pid": pid,
                    "request_id": request_id,
                }
                if trace_id is not None:
                    record["trace_id"] = trace_id
                self.logger.info(json.dumps(record, separators=(",", ":")))
                return
            version = request.version
            self.logger.info(
                '%s - - [%s] "%s %s HTTP/%d.%d" %d %d "%s" "%s" %s %.6f %s %s',
                client, time.strftime("%d/%b/%Y:%H:%M:%S %z"), request.method,
                _quoted(request.raw_path), version.major, version.minor, response.status,
                size, _quoted(headers.get("Referer", "-")),
                _quoted(headers.get("User-Agent", "-")), _quoted(layer), time_,
                _quoted(request_id), trace_id or "-")

    return GatewayAccessLogger


def access_log_settings(server: ServerConfig) -> dict[str, Any]:
    """The AppRunner keyword arguments for ``server.access_log*``."""
    if not server.access_log:
        return {"access_log": None}
    return {"access_log": logging.getLogger(ACCESS_LOGGER),
            "access_log_class": make_access_logger(ClientAddress(server.trusted_proxies),
                                                   server.access_log_format)}


def setup_access_log_output(stream: IO[str] | None = None) -> None:
    """Access lines as they are (no timestamp/level prefix) to stdout, not mixed into
    the service's own log. Whether there are any is ``server.access_log``."""
    logger = logging.getLogger(ACCESS_LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
