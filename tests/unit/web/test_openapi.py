"""gateway/web/openapi.json against the live router: no route without its document,
no documented path without its route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.config_load import from_mapping
from gateway.web import openapi
from gateway.web.app import create_app

METHODS = ("get", "head", "put", "post", "delete", "patch", "options")


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, router pattern) of every operation of the document."""
    return {(method.upper(), item.get("x-aiohttp-route", path))
            for path, item in document["paths"].items()
            for method in METHODS if method in item}


def routed(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, pattern) of every route of ``app`` and its sub-apps."""
    found: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        info = resource.get_info()
        if "app" in info:  # a sub-app (the admin API): its patterns carry its prefix
            found |= routed(info["app"])
            continue
        for route in resource:
            if route.method != "*":  # the catch-all: every 404/405 (web/edge.py), no operation
                found.add((route.method, resource.canonical))
    return found


async def build(tmp_path: Path, **sections: Any) -> web.Application:
    config = from_mapping({"origin": {"kind": "local", "root": str(tmp_path)},
                          "disk": {"path": str(tmp_path / "cache")}, **sections}, {})
    return await create_app(config)


@pytest.fixture
async def app(tmp_path: Path):
    built = await build(tmp_path, admin={"token": "t" * 32})
    yield built
    if not built.frozen:  # never served: its cleanup still closes what it built
        built.freeze()
    await built.cleanup()


async def test_every_route_is_documented_and_every_documented_path_routed(app):
    routes = routed(app)
    assert ("DELETE", "/admin/images/{image_id}") in routes  # the walk sees the sub-app
    assert routes == documented(openapi.load())


def test_the_document_is_openapi_3_1_with_unique_operation_ids():
    document = openapi.load()
    assert document["openapi"] == "3.1.0"
    ids = [item[m]["operationId"] for item in document["paths"].values()
           for m in METHODS if m in item]
    assert len(ids) == len(set(ids))


async def test_served_with_admin_paths_only_when_the_admin_api_is_on(app, aiohttp_client,
                                                                     tmp_path):
    client = await aiohttp_client(app)
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == openapi.load()

    plain = await aiohttp_client(await build(tmp_path / "plain"))
    served = await (await plain.get("/openapi.json")).json()
    assert served["paths"]
    assert not [p for p in served["paths"] if p.startswith("/admin")]
    assert "securitySchemes" not in served["components"]
    assert documented(served) == routed(plain.app)
