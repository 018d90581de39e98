"""Typed application keys: what create_app wires and the handlers read."""

from __future__ import annotations

from aiohttp import web

from gateway.aliases import AliasStore
from gateway.config import Config
from gateway.health import Health
from gateway.invalidation import Invalidator
from gateway.redis_health import RedisHealth
from gateway.service import ImageService
from gateway.stats import Stats
from gateway.variants import VariantService

CONFIG = web.AppKey("config", Config)
SERVICE = web.AppKey("service", ImageService)
STATS = web.AppKey("stats", Stats)
HEALTH = web.AppKey("health", Health)
INVALIDATOR = web.AppKey("invalidator", Invalidator)
ALIASES = web.AppKey("aliases", AliasStore)
REDIS_HEALTH = web.AppKey("redis_health", RedisHealth)
VARIANTS = web.AppKey("variants", VariantService)
