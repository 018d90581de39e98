"""The edge (web/edge.py): every route behind one wrapper, no aiohttp middlewares."""

from __future__ import annotations

import pytest
from aiohttp import web

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client(gateway_client, gateway_config):
    return await gateway_client(gateway_config(admin={"token": TOKEN},
                                               limits={"rate": 1000.0, "burst": 1000}))


def _apps(app: web.Application) -> list[web.Application]:
    subs = [r.get_info()["app"] for r in app.router.resources()
            if isinstance(r, web.PrefixedSubAppResource)]
    return [app, *subs]


async def test_no_app_has_middlewares(client):
    # Any middleware, on the root or the admin sub-app, would make aiohttp run its
    # middleware chain (and one of its own per app) on every image request again.
    apps = _apps(client.app)
    assert len(apps) == 2
    assert all(len(app.middlewares) == 0 for app in apps)
    assert all(len(app.on_response_prepare) == 0 for app in apps)


@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("GET", "/nowhere", 404, None),
    ("POST", "/healthz", 405, {"GET", "HEAD"}),
    ("DELETE", "/metrics", 405, {"GET"}),
    ("GET", "/admin/nowhere", 404, None),
    ("GET", "/admin/images/a.png", 405, {"DELETE", "PUT"}),
])
async def test_what_no_route_takes_is_a_json_answer_of_ours(client, method, path, status,
                                                            allow):
    resp = await client.request(method, path, headers=AUTH)
    assert resp.status == status
    assert (await resp.json()) == {"success": False, "error": (
        "not found" if status == 404 else "method not allowed"),
        "request_id": resp.headers["X-Request-Id"]}
    assert resp.headers["Server"] == "image-gateway"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    if allow is not None:
        assert set(resp.headers["Allow"].replace(" ", "").split(",")) == allow


async def test_the_admin_catch_all_is_behind_the_token(client):
    resp = await client.get("/admin/nowhere")
    assert resp.status == 401


async def test_unmatched_and_refused_requests_are_counted(client):
    for path in ("/nowhere", "/elsewhere"):
        await (await client.get(path)).read()
    await (await client.post("/healthz")).read()
    text = await (await client.get("/metrics")).text()
    assert 'gateway_http_requests_total{route="unmatched",status="404"} 2.0' in text
    assert 'gateway_http_requests_total{route="unmatched",status="405"} 1.0' in text


async def test_probes_are_not_rate_limited_but_images_are(gateway_client, gateway_config):
    client = await gateway_client(gateway_config(limits={"rate": 0.001, "burst": 2}))
    statuses = [(await client.get("/images/default_pfp.png")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert [(await client.get("/healthz")).status for _ in range(5)] == [200] * 5
    assert (await client.get("/nowhere")).status == 429  # refused paths spend tokens too
