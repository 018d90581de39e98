"""Typed application keys: what create_app wires and the handlers read."""

from __future__ import annotations

from aiohttp import web

from gateway.cluster.aliases import AliasStore
from gateway.cluster.invalidation import Invalidator
from gateway.cluster.redis import RedisHealth
from gateway.config import Config
from gateway.observe.counters import Stats
from gateway.observe.health import Health
from gateway.service import ImageService
from gateway.variants.service import VariantService

CONFIG = web.AppKey("config", Config)
SERVICE = web.AppKey("service", ImageService)
STATS = web.AppKey("stats", Stats)
HEALTH = web.AppKey("health", Health)
INVALIDATOR = web.AppKey("invalidator", Invalidator)
ALIASES = web.AppKey("aliases", AliasStore)
REDIS_HEALTH = web.AppKey("redis_health", RedisHealth)
VARIANTS = web.AppKey("variants", VariantService)
