"""Settings from a TOML file and ``GATEWAY_<SECTION>_<NAME>`` variables, validated.

The file is optional; a variable wins over the file. Text from the environment is
read as the setting's type (lists comma-separated, sizes with a unit: 256MiB); a
value of the wrong type names the setting and the value in a ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.config import Config, ConfigError, GiB, MiB, PresetsConfig, S3Config

#: A check of the whole settings that needs more than config.py knows (ConfigError).
Check = Callable[[Config], None]


def load(path: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None, checks: Sequence[Check] = ()) -> Config:
    """Read the TOML file (if any), apply the environment, validate, run ``checks``."""
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
    return from_mapping(data, environ, checks)


def from_mapping(data: Mapping[str, Any], environ: Mapping[str, str],
                 checks: Sequence[Check] = ()) -> Config:
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for name, cls in hints.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{name}: must be a table")
        sections[name] = (_presets(raw, environ) if cls is PresetsConfig
                          else _build_section(name, cls, raw, environ))
    unknown = set(data) - set(hints)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section")
    credentials = _aws_credentials(sections["s3"], environ)
    sections["s3"] = dataclasses.replace(sections["s3"], **credentials)
    config = Config(**sections).validate()
    if config.variants.presets_only and not config.presets.named:
        raise ConfigError("variants.presets_only: true needs at least one preset in [presets]")
    for check in checks:
        check(config)
    return config


_PRESET_ENV = "GATEWAY_PRESETS_"


def _presets(raw: Mapping[str, Any], environ: Mapping[str, str]) -> PresetsConfig:
    """``[presets]`` is the operator's own names: a table given replaces the default
    one; ``GATEWAY_PRESETS_<NAME>`` adds or replaces one (empty: removes it)."""
    named = dict(raw) if raw else dict(PresetsConfig().named)
    for env_name, value in environ.items():
        if env_name.startswith(_PRESET_ENV):
            named[env_name[len(_PRESET_ENV):].lower()] = value
    for name, query in named.items():
        if not re.fullmatch(r"[a-z0-9_-]{1,32}", name):
            raise ConfigError(f"presets.{name}: a preset name is 1-32 of [a-z0-9_-]")
        if not isinstance(query, str):
            raise ConfigError(f"presets.{name}: {query!r} is not a string")
    return PresetsConfig(tuple((n, q) for n, q in named.items() if q))


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
