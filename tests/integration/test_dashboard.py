"""/admin/dashboard in real headless Chromium: token, live figures, purge, screenshot."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from gateway.config_checks import ASSETS
from gateway.web.app import create_app
from tests.support.browser import Browser

TOKEN = "dashboard-test-token-0123456789"
PFP = (ASSETS / "default_pfp.png").read_bytes()


@pytest.fixture
async def gateway(aiohttp_server, gateway_config, origin_dir, make_image):
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        (origin_dir / name).write_bytes(make_image(seed=i + 1, size=(48, 48)))
    return await aiohttp_server(await create_app(gateway_config(admin={"token": TOKEN})))


async def test_dashboard_page_needs_no_token_but_its_data_does(gateway):
    base = f"http://127.0.0.1:{gateway.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/admin/dashboard") as resp:
            page = await resp.text()
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
            assert resp.headers["Cache-Control"] == "no-store"
            csp = resp.headers["Content-Security-Policy"]
        async with http.get(f"{base}/admin/stats") as resp:
            assert resp.status == 401
    # self-contained: no external script, style, font or image
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", csp)


async def test_dashboard_in_chromium(gateway, tmp_path):
    base = f"http://127.0.0.1:{gateway.port}"
    async with aiohttp.ClientSession() as http, Browser(tmp_path / "browser") as browser:

        async def get(image_id: str) -> str:
            async with http.get(f"{base}/images/{image_id}") as resp:
                await resp.read()
                assert resp.status == 200
                return resp.headers["X-Cache"]

        await browser.goto(f"{base}/admin/dashboard")
        await browser.wait_for("!document.getElementById('login').classList.contains('hidden')")

        # a wrong token is refused and not kept
        await browser.type_into("#token", "not-the-right-token")
        await browser.click("#login-button")
        await browser.wait_for("document.getElementById('login-error').textContent.length > 0")
        assert "not accepted" in await browser.text("#login-error")
        assert await browser.evaluate("sessionStorage.length") == 0

        await browser.type_into("#token", TOKEN)
        await browser.click("#login-button")
        await browser.wait_for("document.getElementById('login').classList.contains('hidden')")
        await browser.wait_for("document.getElementById('requests').textContent === '0'")

        # traffic: 3 misses, 4 memory hits, 1 fallback -> the page follows within a refresh
        for image_id in ["a.png", "a.png", "a.png", "b.png", "b.png", "c.png", "a.png",
                         "nobody.png"]:
            await get(image_id)
        await browser.wait_for("document.getElementById('requests').textContent === '8'",
                               timeout=8)
        assert await browser.text("#hit-rate") == "50.0%"
        assert (await browser.text("#top tr:first-child code")) == "a.png"
        assert await browser.evaluate(
            "document.querySelector('#layers tr[data-layer=memory] td:nth-child(3)')"
            ".textContent") == "4"
        assert "MiB" in await browser.text("#fill-memory")
        assert await browser.evaluate(
            "[...document.querySelectorAll('#recs li')].length") >= 1

        # purge one image through the page: its next request goes to the origin
        assert await get("a.png") == "HIT-MEMORY"
        await browser.type_into("#purge-id", "a.png")
        await browser.click("#purge-button")
        await browser.wait_for("document.body.dataset.lastPurge === 'a.png'")
        assert "Purged a.png" in await browser.text("#toast")
        assert await get("a.png") == "MISS"
        assert await get("a.png") == "HIT-MEMORY"

        # the token is kept for the tab: a reload opens the dashboard directly
        await browser.reload()
        await browser.wait_for("document.getElementById('login').classList.contains('hidden')"
                               " && document.getElementById('requests').textContent === '11'",
                               timeout=8)
        await asyncio.sleep(0.3)  # let the bars' width transition settle for the picture
        shot = await browser.screenshot(tmp_path / "dashboard.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000

        problems = [p for p in browser.problems() if "status of 401" not in p]
        assert problems == []


async def test_clear_all_caches_from_the_page(gateway, tmp_path):
    base = f"http://127.0.0.1:{gateway.port}"
    async with aiohttp.ClientSession() as http, Browser(tmp_path / "browser") as browser:
        for _ in range(2):
            async with http.get(f"{base}/images/b.png") as resp:
                await resp.read()
        await browser.goto(f"{base}/admin/dashboard")
        await browser.evaluate(f"sessionStorage.setItem('image-gateway-admin-token', "
                               f"'{TOKEN}')")
        await browser.reload()
        await browser.wait_for("document.getElementById('requests').textContent === '2'")
        await browser.click("#clear")  # arms
        assert "again" in await browser.text("#clear")
        await browser.click("#clear")  # confirms
        await browser.wait_for("document.getElementById('toast').textContent"
                               ".startsWith('Cleared 1 memory and 1 disk')")
        async with http.get(f"{base}/images/b.png") as resp:
            assert resp.headers["X-Cache"] == "MISS"
        assert browser.problems() == []


async def test_purge_of_a_nested_key_from_the_page(gateway, origin_dir, make_image, tmp_path):
    # The page sends the key as one encoded segment (encodeURIComponent: '/' is %2F),
    # which the admin route reads back as the same key.
    (origin_dir / "nested").mkdir()
    (origin_dir / "nested" / "a b+.png").write_bytes(make_image(seed=9, size=(48, 48)))
    base = f"http://127.0.0.1:{gateway.port}"
    url = f"{base}/images/nested/a%20b%2B.png"
    async with aiohttp.ClientSession() as http, Browser(tmp_path / "browser") as browser:

        async def layer() -> str:
            async with http.get(url) as resp:
                await resp.read()
                assert resp.status == 200
                return resp.headers["X-Cache"]

        assert [await layer(), await layer()] == ["MISS", "HIT-MEMORY"]
        await browser.goto(f"{base}/admin/dashboard")
        await browser.evaluate(f"sessionStorage.setItem('image-gateway-admin-token', "
                               f"'{TOKEN}')")
        await browser.reload()
        await browser.wait_for("document.getElementById('login').classList.contains('hidden')")
        await browser.type_into("#purge-id", "nested/a b+.png")
        await browser.click("#purge-button")
        await browser.wait_for("document.body.dataset.lastPurge === 'nested/a b+.png'")
        assert await layer() == "MISS"
