"""Issue 12, part 5: hostile input and faults, each through the real HTTP stack.

Every case here answered a 500, a traceback or the wrong thing before issue 12.
"""

from __future__ import annotations

import pytest

from gateway.config import ASSETS

PFP = (ASSETS / "default_pfp.png").read_bytes()


@pytest.fixture
async def client(gateway_client, gateway_config):
    return await gateway_client(gateway_config())


# -- conditional requests ---------------------------------------------------------------

@pytest.mark.parametrize("date", [
    "Sun, 06 Nov 99999999999 08:49:37 GMT",  # past what a datetime holds: OverflowError
    "Sun, 06 Nov 1994 99:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 +9999",
])
async def test_out_of_range_if_modified_since_is_ignored(client, date):
    resp = await client.get("/images/default_pfp.png", headers={"If-Modified-Since": date})
    assert resp.status == 200
    assert await resp.read() == PFP


# -- admin bodies -------------------------------------------------------------------------

TOKEN = "a-token-long-enough-for-the-check"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NESTED = "[" * 100_000 + "]" * 100_000  # past the JSON decoder's recursion limit


@pytest.fixture
async def admin(gateway_client, gateway_config):
    return await gateway_client(gateway_config(admin={"token": TOKEN}))


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/admin/users/u1"), ("POST", "/admin/prefetch"),
])
@pytest.mark.parametrize("body", [NESTED, '{"image_ids": ' + NESTED + "}"])
async def test_deeply_nested_json_is_400(admin, method, path, body):
    resp = await admin.request(method, path, data=body,
                               headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json()) == {"success": False, "error": "body must be JSON"}


# -- variant parameters -------------------------------------------------------------------

@pytest.mark.parametrize(("query", "message"), [
    ("w=33", "w must be one of 32, 48, 64, 96, 128, 256, 512 (transform.widths)"),
    ("h=1e3", "h must be one of 32, 48, 64, 96, 128, 256, 512 (transform.heights)"),
    ("w=64&q=81", "q must be one of 50, 60, 70, 75, 80, 85, 90 (transform.qualities)"),
    ("w=64&w=64", "w given more than once"),
    ("w=64&h=64&fit=fill", "fit must be one of cover, contain"),
    ("format=bmp", "format must be one of auto, original, "),
])
async def test_variant_400_carries_the_documented_message(client, query, message):
    resp = await client.get(f"/images/default_pfp.png?{query}")
    assert resp.status == 400
    body = await resp.json()
    assert body["success"] is False
    assert body["error"].startswith(message)
