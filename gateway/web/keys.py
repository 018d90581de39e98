"""Every typed key of the app and its requests: what create_app wires, handlers read."""

from __future__ import annotations

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

CONFIG = web.AppKey("config", Config)
SERVICE = web.AppKey("service", ImageService)
CACHE = web.AppKey("cache", TieredCache)
STATS = web.AppKey("stats", Stats)
HEALTH = web.AppKey("health", Health)
INVALIDATOR = web.AppKey("invalidator", Invalidator)
ALIASES = web.AppKey("aliases", AliasStore)
REDIS_HEALTH = web.AppKey("redis_health", RedisHealth)
VARIANTS = web.AppKey("variants", VariantService)
HUB = web.AppKey("stats_hub", StatsHub)
#: The origin's upload capability; absent when the origin cannot store objects.
UPLOADER = web.AppKey("uploader", Uploadable)

#: The layer an image answer came from (set where the response is made), read by the
#: metrics middleware: nothing re-reads X-Cache to learn what the service did.
ANSWER_LAYER = web.RequestKey("answer_layer", Layer)
