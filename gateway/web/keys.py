"""The typed keys of the app and its requests: what create_app wires, handlers read."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.cache.tiers import TieredCache
from gateway.cluster.aliases import AliasStore
from gateway.cluster.invalidation import Invalidator
from gateway.cluster.redis import RedisHealth
from gateway.config import Config
from gateway.model import Layer
from gateway.observe.counters import Stats
from gateway.observe.health import Health
from gateway.observe.hub import StatsHub
from gateway.origin import Uploadable
from gateway.service import ImageService
from gateway.variants.service import VariantService
from gateway.web.cors import ImageHeaders


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything create_app built that a handler may use, under one key."""

    config: Config
    service: ImageService
    cache: TieredCache
    variants: VariantService
    invalidator: Invalidator
    aliases: AliasStore
    stats: Stats
    hub: StatsHub
    health: Health
    redis_health: RedisHealth
    uploader: Uploadable | None  # None: the origin cannot store objects
    image_headers: ImageHeaders  # CORS and Accept-CH of the image routes (web/cors.py)


PARTS = web.AppKey("parts", Parts)

#: The layer an image answer came from, or ERROR (set where the response is made:
#: web/responses.image_response, web/errors.error_response), read by the edge's
#: Observer, the access log and tracing: nothing re-reads X-Cache to learn it.
ANSWER_LAYER = web.RequestKey("answer_layer", Layer)

#: The route an /images/ path names (web/paths.py), set once the raw path is parsed:
#: one catch-all aiohttp route serves them all, so its pattern can't be the label.
ROUTE = web.RequestKey("route", str)

#: The object key of an image answer (for the top-images figures).
IMAGE_KEY = web.RequestKey("image_key", str)

#: The trace id (32 hex digits) of a traced request, for its access log line; set only
#: when tracing is on (gateway/web/tracing.py).
TRACE_ID = web.RequestKey("trace_id", str)
