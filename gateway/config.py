"""Settings: one frozen dataclass per component, from TOML + ``GATEWAY_<SECTION>_<NAME>``.

Every value is parsed and validated at start-up; a bad one raises ``ConfigError``
whose message names the setting and the value, so the process stops with one
clear line instead of failing later on the first request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MiB = 1024 * 1024
GiB = 1024 * MiB

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/avif")
SVG_TYPE = "image/svg+xml"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and its value."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    access_log: bool = True
    access_log_format: str = "json"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    shutdown_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    send_timeout: float = 60.0
    max_line_size: int = 8190
    max_field_size: int = 8190

    def validate(self) -> None:
        _port("server.port", self.port)
        _at_least("server.workers", self.workers, 1)
        _positive("server.shutdown_timeout", self.shutdown_timeout)
        _positive("server.keepalive_timeout", self.keepalive_timeout)
        _positive("server.send_timeout", self.send_timeout)
        _at_least("server.max_line_size", self.max_line_size, 256)
        _at_least("server.max_field_size", self.max_field_size, 256)
        _one_of("server.access_log_format", self.access_log_format, ("json", "classic"))
        for net in self.trusted_proxies:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(
                    f"server.trusted_proxies: {net!r} is not an IP network"
                ) from None


@dataclass(frozen=True)
class OriginConfig:
    kind: str = "local"
    root: str = "var/samples"
    max_bytes: int = 10 * MiB
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_connections: int = 64
    allow_svg: bool = False
    retries: int = 2
    retry_backoff: float = 0.1
    breaker_threshold: int = 5
    breaker_reset: float = 10.0
    max_concurrent_fetches: int = 64
    queue_timeout: float = 2.0

    def validate(self) -> None:
        _one_of("origin.kind", self.kind, ("local", "s3"))
        _at_least("origin.retries", self.retries, 0)
        _at_least("origin.retry_backoff", self.retry_backoff, 0)
        _at_least("origin.breaker_threshold", self.breaker_threshold, 1)
        _positive("origin.breaker_reset", self.breaker_reset)
        _at_least("origin.max_concurrent_fetches", self.max_concurrent_fetches, 1)
        _positive("origin.queue_timeout", self.queue_timeout)
        _positive("origin.max_bytes", self.max_bytes)
        _positive("origin.connect_timeout", self.connect_timeout)
        _positive("origin.read_timeout", self.read_timeout)
        _at_least("origin.max_connections", self.max_connections, 1)
        if self.kind == "local" and not self.root:
            raise ConfigError("origin.root: must name a folder when origin.kind is 'local'")

    @property
    def allowed_types(self) -> frozenset[str]:
        return frozenset(IMAGE_TYPES + ((SVG_TYPE,) if self.allow_svg else ()))


@dataclass(frozen=True)
class S3Config:
    endpoint: str = ""
    bucket: str = "profile-images"
    region: str = "us-east-1"
    prefix: str = ""
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)

    def validate(self) -> None:
        if self.endpoint:
            _url("s3.endpoint", self.endpoint, ("http", "https"))
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise ConfigError(f"s3.bucket: {self.bucket!r} is not a valid bucket name")
        if not self.region:
            raise ConfigError("s3.region: must not be empty")


@dataclass(frozen=True)
class PresignConfig:
    expires: int = 3600
    cache_ttl: int = 3000

    def validate(self) -> None:
        _at_least("presign.expires", self.expires, 60)
        _positive("presign.cache_ttl", self.cache_ttl)
        if self.cache_ttl >= self.expires:
            raise ConfigError(
                f"presign.cache_ttl: {self.cache_ttl} must be below presign.expires "
                f"({self.expires}) so no stored URL outlives its signature"
            )


@dataclass(frozen=True)
class RedisConfig:
    url: str = field(default="", repr=False)
    prefix: str = "profile_pic"
    socket_timeout: float = 0.25
    connect_timeout: float = 0.25

    def validate(self) -> None:
        if self.url:
            _url("redis.url", self.url, ("redis", "rediss", "unix"), secret=True)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.prefix):
            raise ConfigError(f"redis.prefix: {self.prefix!r} must be 1-64 of [A-Za-z0-9_.-]")
        _positive("redis.socket_timeout", self.socket_timeout)
        _positive("redis.connect_timeout", self.connect_timeout)


@dataclass(frozen=True)
class MemoryConfig:
    max_bytes: int = 256 * MiB
    max_object_bytes: int = 8 * MiB

    def validate(self) -> None:
        _at_least("memory.max_bytes", self.max_bytes, 0)
        _at_least("memory.max_object_bytes", self.max_object_bytes, 0)


@dataclass(frozen=True)
class DiskConfig:
    path: str = "var/cache"
    max_bytes: int = 10 * GiB
    ttl: int = 604800
    ttl_jitter: float = 0.05
    max_stale: int = 604800
    enabled: bool = True

    def validate(self) -> None:
        if self.enabled and not self.path:
            raise ConfigError("disk.path: must name a folder (or set disk.enabled = false)")
        _positive("disk.max_bytes", self.max_bytes)
        _positive("disk.ttl", self.ttl)
        _at_least("disk.max_stale", self.max_stale, 0)
        if not 0 <= self.ttl_jitter < 1:
            raise ConfigError(f"disk.ttl_jitter: {self.ttl_jitter} must be in [0, 1)")


@dataclass(frozen=True)
class FetchConfig:
    lock_timeout: float = 10.0
    refresh_ahead: float = 3600.0

    def validate(self) -> None:
        _positive("fetch.lock_timeout", self.lock_timeout)
        _at_least("fetch.refresh_ahead", self.refresh_ahead, 0)


@dataclass(frozen=True)
class ClusterConfig:
    lease_ttl: float = 15.0
    wait_timeout: float = 10.0
    poll_interval: float = 0.02
    fill_max_bytes: int = 1 * MiB
    fill_ttl: int = 60

    def validate(self) -> None:
        _positive("cluster.lease_ttl", self.lease_ttl)
        _positive("cluster.wait_timeout", self.wait_timeout)
        _positive("cluster.poll_interval", self.poll_interval)
        _at_least("cluster.fill_max_bytes", self.fill_max_bytes, 0)
        _at_least("cluster.fill_ttl", self.fill_ttl, 1)


@dataclass(frozen=True)
class HttpConfig:
    cache_control: str = "public, max-age=2700"
    fallback_cache_control: str = "public, max-age=60"
    user_cache_control: str = "public, max-age=30"

    def validate(self) -> None:
        for name in ("cache_control", "fallback_cache_control", "user_cache_control"):
            value = getattr(self, name)
            if not value or any(ord(c) < 0x20 for c in value):
                raise ConfigError(f"http.{name}: {value!r} is not a usable header value")


@dataclass(frozen=True)
class FallbackConfig:
    image: str = "default_pfp.png"

    def validate(self) -> None:
        if self.image and resolve_fallback(self.image) is None:
            raise ConfigError(f"fallback.image: {self.image!r} is not a readable file")


@dataclass(frozen=True)
class AdminConfig:
    token: str = field(default="", repr=False)
    prefetch_max: int = 500
    prefetch_concurrency: int = 8

    def validate(self) -> None:
        _at_least("admin.prefetch_max", self.prefetch_max, 1)
        _at_least("admin.prefetch_concurrency", self.prefetch_concurrency, 1)
        if self.token and len(self.token) < 16:
            raise ConfigError("admin.token: must be at least 16 characters (value not shown)")


@dataclass(frozen=True)
class LimitsConfig:
    rate: float = 0.0
    burst: int = 100
    max_clients: int = 100_000

    def validate(self) -> None:
        _at_least("limits.rate", self.rate, 0)
        _at_least("limits.burst", self.burst, 1)
        _at_least("limits.max_clients", self.max_clients, 1)


@dataclass(frozen=True)
class SigningConfig:
    keys: tuple[str, ...] = field(default=(), repr=False)
    required: bool = False

    def validate(self) -> None:
        from gateway.web.signing import parse_keys

        try:
            parse_keys(self.keys)
        except ValueError as exc:
            raise ConfigError(f"signing.keys: {exc} (values not shown)") from None
        if self.required and not self.keys:
            raise ConfigError("signing.required: true needs at least one signing.keys entry")


TRANSFORM_FORMATS = ("webp", "avif", "jpeg", "png")


@dataclass(frozen=True)
class TransformConfig:
    widths: tuple[int, ...] = (32, 48, 64, 96, 128, 256, 512)
    heights: tuple[int, ...] = (32, 48, 64, 96, 128, 256, 512)
    qualities: tuple[int, ...] = (50, 60, 70, 75, 80, 85, 90)
    default_quality: int = 80
    formats: tuple[str, ...] = TRANSFORM_FORMATS
    enlarge: bool = False
    max_pixels: int = 25_000_000
    workers: int = 2
    queue: int = 16
    upload_size: int = 128
    upload_format: str = "original"
    upload_quality: int = 90

    def validate(self) -> None:
        for name in ("widths", "heights"):
            for value in getattr(self, name):
                if not 1 <= value <= 8192:
                    raise ConfigError(f"transform.{name}: {value} must be in 1-8192")
        for value in self.qualities:
            if not 1 <= value <= 100:
                raise ConfigError(f"transform.qualities: {value} must be in 1-100")
        if self.default_quality not in self.qualities:
            raise ConfigError(f"transform.default_quality: {self.default_quality} must be "
                              "one of transform.qualities")
        for fmt in self.formats:
            _one_of("transform.formats", fmt, TRANSFORM_FORMATS)
        _at_least("transform.max_pixels", self.max_pixels, 1)
        _at_least("transform.workers", self.workers, 1)
        _at_least("transform.queue", self.queue, 0)
        if not 16 <= self.upload_size <= 4096:
            raise ConfigError(f"transform.upload_size: {self.upload_size} must be in 16-4096")
        _one_of("transform.upload_format", self.upload_format,
                ("original", *TRANSFORM_FORMATS))
        if not 1 <= self.upload_quality <= 100:
            raise ConfigError(f"transform.upload_quality: {self.upload_quality} must be "
                              "in 1-100")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)
    s3: S3Config = field(default_factory=S3Config)
    presign: PresignConfig = field(default_factory=PresignConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    disk: DiskConfig = field(default_factory=DiskConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)

    def validate(self) -> Config:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        return self


ASSETS = Path(__file__).parent / "assets"


def resolve_fallback(name: str) -> Path | None:
    """The fallback picture: a path as given, else one of the bundled assets."""
    for candidate in (Path(name), ASSETS / name):
        if candidate.is_file() and os.access(candidate, os.R_OK):
            return candidate
    return None


def load(path: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply the environment, validate."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"--config: cannot read {str(path)!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config: {str(path)!r} is not valid TOML: {exc}") from None
    return from_mapping(data, environ)


def from_mapping(data: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for name, cls in hints.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{name}: must be a table")
        sections[name] = _build_section(name, cls, raw, environ)
    unknown = set(data) - set(hints)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section")
    credentials = _aws_credentials(sections["s3"], environ)
    sections["s3"] = dataclasses.replace(sections["s3"], **credentials)
    return Config(**sections).validate()


def _aws_credentials(s3: S3Config, environ: Mapping[str, str]) -> dict[str, str]:
    # The standard AWS variables win, as every AWS tool does; the config is the fallback.
    return {
        "access_key_id": environ.get("AWS_ACCESS_KEY_ID", s3.access_key_id),
        "secret_access_key": environ.get("AWS_SECRET_ACCESS_KEY", s3.secret_access_key),
    }


def _build_section(section: str, cls: type[Any], raw: Mapping[str, Any],
                   environ: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown setting")
    values: dict[str, Any] = {}
    for name in known:
        setting = f"{section}.{name}"
        env_name = f"GATEWAY_{section}_{name}".upper()
        if env_name in environ:
            values[name] = _parse_text(setting, hints[name], environ[env_name])
        elif name in raw:
            values[name] = _coerce(setting, hints[name], raw[name])
    return cls(**values)


_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$")
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": MiB, "mb": 1000**2,
          "mib": MiB, "g": GiB, "gb": 1000**3, "gib": GiB, "t": 1024 * GiB,
          "tb": 1000**4, "tib": 1024 * GiB}


def _parse_text(setting: str, kind: Any, text: str) -> Any:
    """An environment string as the setting's type (sizes may carry a unit: 256MiB)."""
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{setting}: {text!r} is not a boolean (true/false)")
    if kind is int:
        match = _SIZE.match(text.replace("_", ""))
        if match and (match.group(2) is None or setting.endswith("bytes")):
            return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{setting}: {text!r} is not a whole number") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{setting}: {text!r} is not a number") from None
    if _is_int_tuple(kind):
        return tuple(_parse_text(setting, int, part) for part in text.split(",")
                     if part.strip())
    if _is_str_tuple(kind):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text


def _coerce(setting: str, kind: Any, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, str):
            return _parse_text(setting, int, value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif _is_int_tuple(kind):
        if isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
    elif _is_str_tuple(kind):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif isinstance(value, str):
        return value
    raise ConfigError(f"{setting}: {value!r} is not a {_type_name(kind)}")


def _is_str_tuple(kind: Any) -> bool:
    return typing.get_origin(kind) is tuple


def _is_int_tuple(kind: Any) -> bool:
    return _is_str_tuple(kind) and typing.get_args(kind)[:1] == (int,)


def _type_name(kind: Any) -> str:
    if _is_int_tuple(kind):
        return "list of whole numbers"
    if _is_str_tuple(kind):
        return "list of strings"
    if isinstance(kind, type | types.GenericAlias):
        return getattr(kind, "__name__", str(kind))
    return str(kind)


def _positive(setting: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{setting}: {value} must be greater than 0")


def _at_least(setting: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{setting}: {value} must be at least {low}")


def _port(setting: str, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{setting}: {value} is not a TCP port (0-65535)")


def _one_of(setting: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{setting}: {value!r} is not one of {', '.join(allowed)}")


def _url(setting: str, value: str, schemes: tuple[str, ...], secret: bool = False) -> None:
    shown = "(value not shown)" if secret else repr(value)
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise ConfigError(f"{setting}: {shown} is not a URL") from None
    if parts.scheme not in schemes:
        raise ConfigError(f"{setting}: {shown} must be a {'/'.join(schemes)} URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"{setting}: {shown} has no host")
