"""Settings: one frozen dataclass per section, every value checked at start-up.

A bad value raises ``ConfigError`` whose message names the setting and the value
(never a secret's), so the process stops with one clear line instead of failing
later on the first request. gateway/config_load.py fills these from TOML and
``GATEWAY_<SECTION>_<NAME>`` variables.

A setting's own bounds sit next to its default as field metadata (``checked(8080,
tcp_port)``, the checks in gateway/config_checks.py) and one walk over every field
applies them; only rules that tie two settings together are written out, in
``_cross_field_rules``. This module imports nothing from gateway but config_checks,
which imports nothing from gateway, so every other module may import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain, product

from gateway.config_checks import (
    CHECKS,
    admin_token,
    at_least,
    between,
    checked,
    cluster_secret,
    cors_origin,
    fraction,
    header_value,
    host_port,
    ip_network,
    matches,
    not_empty,
    one_of,
    optional,
    positive,
    readable_file,
    readable_path,
    signing_key,
    tcp_port,
    url,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
DAY = 24 * 3600

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/avif")
SVG_TYPE = "image/svg+xml"
TRANSFORM_FORMATS = ("webp", "avif", "jpeg", "png")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and its value."""


# --- the sections -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = checked(8080, tcp_port)
    workers: int = checked(1, at_least(1))
    access_log: bool = True
    access_log_format: str = checked("json", one_of("json", "classic"))
    trusted_proxies: tuple[str, ...] = checked(("127.0.0.1/32", "::1/128"), ip_network)
    shutdown_timeout: float = checked(10.0, positive)
    keepalive_timeout: float = checked(30.0, positive)
    send_timeout: float = checked(60.0, positive)
    max_line_size: int = checked(8190, at_least(256))
    max_field_size: int = checked(8190, at_least(256))


@dataclass(frozen=True)
class OriginConfig:
    kind: str = checked("local", one_of("local", "s3"))
    root: str = "var/samples"
    max_bytes: int = checked(10 * MiB, positive)
    connect_timeout: float = checked(2.0, positive)
    read_timeout: float = checked(5.0, positive)
    max_connections: int = checked(64, at_least(1))
    allow_svg: bool = False
    retries: int = checked(2, at_least(0))
    retry_backoff: float = checked(0.1, at_least(0))
    breaker_threshold: int = checked(5, at_least(1))
    breaker_reset: float = checked(10.0, positive)
    max_concurrent_fetches: int = checked(64, at_least(1))
    queue_timeout: float = checked(2.0, positive)

    @property
    def allowed_types(self) -> frozenset[str]:
        return frozenset(IMAGE_TYPES + ((SVG_TYPE,) if self.allow_svg else ()))


@dataclass(frozen=True)
class S3Config:
    endpoint: str = checked("", optional(url("http", "https")))
    bucket: str = checked("profile-images", matches(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
                                                    "is not a valid bucket name"))
    region: str = checked("us-east-1", not_empty)
    prefix: str = ""
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class PresignConfig:
    expires: int = checked(3600, at_least(60))
    cache_ttl: int = checked(3000, positive)


@dataclass(frozen=True)
class RedisConfig:
    # A Redis URL may carry a password: never shown, not even in an error.
    url: str = checked("", optional(url("redis", "rediss", "unix", secret=True)), secret=True)
    prefix: str = checked("profile_pic", matches(r"[A-Za-z0-9_.-]{1,64}",
                                                 "must be 1-64 of [A-Za-z0-9_.-]"))
    socket_timeout: float = checked(0.25, positive)
    connect_timeout: float = checked(0.25, positive)
    sentinels: tuple[str, ...] = checked((), host_port)
    sentinel_master: str = checked("", optional(matches(r"[A-Za-z0-9_.-]{1,64}", "is no name")))
    ssl_ca_file: str = checked("", optional(readable_path))
    ssl_cert_file: str = checked("", optional(readable_path))
    ssl_key_file: str = checked("", optional(readable_path))
    @property
    def configured(self) -> bool:  # a URL or Sentinel
        return bool(self.url or self.sentinels)


@dataclass(frozen=True)
class MemoryConfig:
    max_bytes: int = checked(256 * MiB, at_least(0))
    max_object_bytes: int = checked(8 * MiB, at_least(0))


@dataclass(frozen=True)
class DiskConfig:
    path: str = "var/cache"
    max_bytes: int = checked(10 * GiB, positive)
    ttl: int = checked(7 * DAY, positive)
    ttl_jitter: float = checked(0.05, fraction)
    max_stale: int = checked(7 * DAY, at_least(0))
    enabled: bool = True


@dataclass(frozen=True)
class CacheConfig:
    negative_ttl: float = checked(30.0, at_least(0))
    negative_max_bytes: int = checked(4 * MiB, at_least(0))


@dataclass(frozen=True)
class FetchConfig:
    lock_timeout: float = checked(10.0, positive)
    refresh_ahead: float = checked(3600.0, at_least(0))


@dataclass(frozen=True)
class ClusterConfig:
    lease_ttl: float = checked(8.0, positive)
    wait_timeout: float = checked(10.0, positive)
    poll_interval: float = checked(0.02, positive)
    fill_max_bytes: int = checked(1 * MiB, at_least(0))
    fill_ttl: int = checked(60, at_least(1))
    # Authenticates what replicas hand each other through Redis; see fill_secret().
    secret: str = checked("", optional(cluster_secret), secret=True)


@dataclass(frozen=True)
class HttpConfig:
    # stale-while-revalidate = fetch.refresh_ahead, stale-if-error = disk.max_stale: a
    # browser or CDN may do what the gateway itself does (tests/unit/test_config.py).
    cache_control: str = checked(
        "max-age=2700, stale-while-revalidate=3600, stale-if-error=604800", header_value)
    fallback_cache_control: str = checked("max-age=60", header_value)
    user_cache_control: str = checked("max-age=30", header_value)
    stale_cache_control: str = checked("max-age=30", header_value)
    # CORS of the image routes: "*" (never with credentials), origins (echoed), or none.
    cors_origins: tuple[str, ...] = checked(("*",), cors_origin)


@dataclass(frozen=True)
class FallbackConfig:
    image: str = checked("default_pfp.png", optional(readable_file))


@dataclass(frozen=True)
class AdminConfig:
    token: str = checked("", optional(admin_token), secret=True)
    prefetch_max: int = checked(500, at_least(1))
    prefetch_concurrency: int = checked(8, at_least(1))


@dataclass(frozen=True)
class LimitsConfig:
    rate: float = checked(0.0, at_least(0))
    burst: int = checked(100, at_least(1))
    max_clients: int = checked(100_000, at_least(1))


@dataclass(frozen=True)
class SigningConfig:
    keys: tuple[str, ...] = checked((), signing_key, secret=True)
    required: bool = False


_SIZES = (32, 48, 64, 96, 128, 256, 512)


@dataclass(frozen=True)
class TransformConfig:
    widths: tuple[int, ...] = checked(_SIZES, between(1, 8192))
    heights: tuple[int, ...] = checked(_SIZES, between(1, 8192))
    qualities: tuple[int, ...] = checked((50, 60, 70, 75, 80, 85, 90), between(1, 100))
    default_quality: int = 80
    formats: tuple[str, ...] = checked(TRANSFORM_FORMATS, one_of(*TRANSFORM_FORMATS))
    enlarge: bool = False
    max_pixels: int = checked(25_000_000, at_least(1))
    workers: int = checked(2, at_least(1))
    queue: int = checked(16, at_least(0))
    upload_size: int = checked(128, between(16, 4096))
    upload_format: str = checked("original", one_of("original", *TRANSFORM_FORMATS))
    upload_quality: int = checked(90, between(1, 100))


@dataclass(frozen=True)
class VariantsConfig:
    client_hints: bool = False  # Accept-CH; Sec-CH-DPR / Sec-CH-Width honoured
    presets_only: bool = False  # only ?preset=NAME asks for a variant


@dataclass(frozen=True)
class PresetsConfig:  # [presets] name = "query" (read by config_load, checked at start)
    named: tuple[tuple[str, str], ...] = (("avatar", "w=64&h=64&fit=cover&format=auto"),)


@dataclass(frozen=True)
class ClientConfig:  # what the service worker of /client/sw.js keeps in the browser
    max_entries: int = checked(200, between(1, 100_000))
    max_age: int = checked(7 * DAY, at_least(60))


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)
    s3: S3Config = field(default_factory=S3Config)
    presign: PresignConfig = field(default_factory=PresignConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    disk: DiskConfig = field(default_factory=DiskConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    variants: VariantsConfig = field(default_factory=VariantsConfig)
    presets: PresetsConfig = field(default_factory=PresetsConfig)
    client: ClientConfig = field(default_factory=ClientConfig)

    def validate(self) -> Config:
        """Every field's checks, section by section, then the cross-field rules."""
        complaint = next(chain(_field_complaints(self), _cross_field_rules(self)), None)
        if complaint is not None:
            raise ConfigError(complaint)
        return self


def _field_complaints(config: Config) -> Iterator[str]:
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            items = value if isinstance(value, tuple) else (value,)
            for check, item in product(f.metadata.get(CHECKS, ()), items):
                if (complaint := check(item)) is not None:
                    yield f"{section.name}.{f.name}: {complaint}"


def _cross_field_rules(config: Config) -> Iterator[str]:
    origin, presign, transform = config.origin, config.presign, config.transform
    if origin.kind == "local" and not origin.root:
        yield "origin.root: must name a folder when origin.kind is 'local'"
    if presign.cache_ttl >= presign.expires:
        yield (f"presign.cache_ttl: {presign.cache_ttl} must be below presign.expires "
               f"({presign.expires}) so no stored URL outlives its signature")
    if config.server.workers > 1 and not config.redis.configured:
        # Each worker has its own caches and aliases; only Redis's channel tells the
        # others of a purge or an alias change one of them took.
        yield (f"server.workers: {config.server.workers} needs redis.url: without Redis a "
               "purge or alias change reaches only the worker that took it")
    if config.disk.enabled and not config.disk.path:
        yield "disk.path: must name a folder (or set disk.enabled = false)"
    if config.signing.required and not config.signing.keys:
        yield "signing.required: true needs at least one signing.keys entry"
    yield from _redis_rules(config.redis)
    if config.redis.configured and config.cluster.lease_ttl >= config.fetch.lock_timeout:
        # An orphaned lease must end before its waiters give up (SOAK-NOTES.md, 5).
        yield (f"cluster.lease_ttl: {config.cluster.lease_ttl} must be below "
               f"fetch.lock_timeout ({config.fetch.lock_timeout})")
    if config.redis.configured and not fill_secret(config):
        yield ("cluster.secret: required when redis.url is set and there is no S3 secret "
               "access key to derive it from (replicas sign what they share through Redis)")
    if "*" in config.http.cors_origins and len(config.http.cors_origins) > 1:
        yield "http.cors_origins: '*' already allows every origin; list origins or '*'"
    if transform.default_quality not in transform.qualities:
        yield (f"transform.default_quality: {transform.default_quality} must be "
               "one of transform.qualities")


def _redis_rules(redis: RedisConfig) -> Iterator[str]:
    if bool(redis.sentinels) != bool(redis.sentinel_master):
        yield "redis.sentinel_master: set with redis.sentinels (both or neither)"
    files = (redis.ssl_ca_file, redis.ssl_cert_file, redis.ssl_key_file)
    if any(files) and not redis.url.startswith("rediss://"):
        yield "redis.ssl_ca_file: the redis.ssl_* files need a rediss:// redis.url"
    if bool(redis.ssl_cert_file) != bool(redis.ssl_key_file):
        yield "redis.ssl_cert_file: needs redis.ssl_key_file (a certificate and its key)"


def fill_secret(config: Config) -> str:
    """What the key for results shared through Redis comes from: ``cluster.secret``,
    else the S3 secret access key (every replica of an S3 deployment holds it, and
    whoever can only write to Redis does not); "" when there is neither."""
    if config.cluster.secret:
        return config.cluster.secret
    return config.s3.secret_access_key if config.origin.kind == "s3" else ""
