"""Access log: one JSON object a line (or the classic format, by setting)."""

from __future__ import annotations

import json
import logging
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from gateway.web.clientaddr import ClientAddress

CLASSIC = '%a "%r" %s %b "%{X-Cache}o" %Tf'


def make_access_logger(client_address: ClientAddress) -> type[AbstractAccessLogger]:
    class JsonAccessLogger(AbstractAccessLogger):
        def log(self, request: BaseRequest, response: StreamResponse, time_: float) -> None:
            if not self.logger.isEnabledFor(logging.INFO):
                return
            record = {
                "ts": round(time.time(), 3),
                "client": client_address.of(request.remote,
                                            request.headers.get("X-Forwarded-For")),
                "method": request.method,
                "path": request.path_qs,
                "status": response.status,
                "bytes": response.body_length,
                "cache": response.headers.get("X-Cache", "-"),
                "ms": round(time_ * 1000, 3),
                "ua": request.headers.get("User-Agent", ""),
            }
            self.logger.info(json.dumps(record, separators=(",", ":")))

    return JsonAccessLogger
