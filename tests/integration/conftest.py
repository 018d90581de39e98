"""Building gateway apps for integration tests: real config, real parts."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Config
from gateway.config_checks import ASSETS
from gateway.config_load import from_mapping
from gateway.web.app import create_app

ConfigFactory = Callable[..., Config]
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


@pytest.fixture
def origin_dir(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    root.mkdir()
    shutil.copy(ASSETS / "default_pfp.png", root / "default_pfp.png")
    return root


@pytest.fixture
def gateway_config(tmp_path: Path, origin_dir: Path) -> ConfigFactory:
    """Config with a private disk cache and local origin; sections override it."""

    def make(**sections: dict[str, Any]) -> Config:
        base = {"origin": {"kind": "local", "root": str(origin_dir)},
                "disk": {"path": str(tmp_path / "cache")},
                "server": {"access_log": False}}
        return from_mapping(_merge(base, sections), {})

    return make


@pytest.fixture
def s3_config(gateway_config: ConfigFactory, s3: Any) -> ConfigFactory:
    """Config for the S3 origin on the test session's moto server (via ``endpoint``)."""

    def make(endpoint: str | None = None, **sections: dict[str, Any]) -> Config:
        base = {"origin": {"kind": "s3"},
                "s3": {"endpoint": endpoint or s3.endpoint, "bucket": s3.bucket,
                       "access_key_id": "testing", "secret_access_key": "testing"}}
        return gateway_config(**_merge(base, sections))

    return make


@pytest.fixture
def gateway_client(aiohttp_client: Any) -> ClientFactory:
    async def start(config: Config) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(await create_app(config))
        return client

    return start
