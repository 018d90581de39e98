"""Whether the OTEL_* variables ask for traces, and switching tracing on.

Kept apart from web/tracing.py, the only module that imports OpenTelemetry: with
tracing off, nothing of it is imported (tests/integration/test_tracing_process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from gateway.web.tracing import Tracing

log = logging.getLogger(__name__)


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables ask for traces: an exporter named (not
    ``none``) or an OTLP endpoint set, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def start_tracing(stack: contextlib.AsyncExitStack,
             span_exporter: SpanExporter | None) -> Tracing | None:
    if span_exporter is None and not tracing_wanted(os.environ):
        return None
    try:
        from gateway.web.tracing import Tracing
    except ImportError as exc:  # pictures matter more than traces: serve without
        log.warning("OTEL_* variables ask for traces, but OpenTelemetry is not installed "
                    "(pip install 'image-gateway[tracing]'): tracing off (%s)", exc)
        return None
    tracing = Tracing.from_environment(os.environ, span_exporter)
    tracing.instrument()  # before any client (S3, Redis) is made
    # Last to close: the parts' final spans are exported too. In a thread: an exporter
    # that cannot reach its collector must not stall the event loop at shutdown.
    stack.push_async_callback(asyncio.to_thread, tracing.close)
    log.info("tracing on, exporting to %s", "the caller's exporter" if span_exporter else (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_TRACES_EXPORTER")))
    return tracing
