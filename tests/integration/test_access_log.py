"""The access log as gateway/server.py sets it up: client, layer, status, bytes, duration."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.config_checks import ASSETS
from gateway.web.accesslog import ACCESS_LOGGER, access_log_settings, setup_access_log_output
from gateway.web.app import create_app

PFP = (ASSETS / "default_pfp.png").read_bytes()


async def serve(config) -> TestServer:
    """A listening app with the runner settings gateway/server.py uses for the access log."""
    server = TestServer(await create_app(config))
    await server.start_server(**access_log_settings(config.server))
    return server


@pytest.fixture
def start(aiohttp_client, gateway_config, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    async def go(**sections):
        config = gateway_config(**{"server": {"access_log": True}, **sections})
        return await aiohttp_client(await serve(config))

    return go


async def lines(caplog, n: int) -> list[str]:
    """The access lines so far, once there are ``n`` (written after the response)."""
    for _ in range(200):
        found = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
        if len(found) >= n:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {n} access lines, got {found}")


async def get(client, path: str, **headers):
    resp = await client.request(headers.pop("method", "GET"), path, headers=headers)
    await resp.read()
    return resp


async def test_json_line_per_request(start, caplog):
    client = await start()
    await get(client, "/images/default_pfp.png?size=1", **{"User-Agent": "probe/1.0"})
    await get(client, "/images/default_pfp.png")
    records = [json.loads(line) for line in await lines(caplog, 2)]
    first, second = records
    assert set(first) == {"ts", "client", "method", "path", "status", "bytes", "layer", "ms",
                          "ua", "pid", "request_id"}  # trace_id only when traced
    assert first["method"] == "GET"
    assert first["path"] == "/images/default_pfp.png?size=1"
    assert (first["status"], first["layer"], first["bytes"]) == (200, "MISS", len(PFP))
    assert first["ua"] == "probe/1.0"
    assert first["client"] == "127.0.0.1"
    assert first["ms"] > 0
    assert second["layer"] == "HIT-MEMORY"


async def test_forwarded_for_believed_from_a_trusted_proxy_only(start, caplog):
    trusted = await start()  # 127.0.0.1 (the test client) is trusted by default
    await get(trusted, "/healthz", **{"X-Forwarded-For": "203.0.113.7"})
    await get(trusted, "/healthz", **{"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    await get(trusted, "/healthz", **{"X-Forwarded-For": "not-an-ip"})
    got = [json.loads(line)["client"] for line in await lines(caplog, 3)]
    # the right-most untrusted hop is the client; what is left of it is client-supplied
    assert got == ["203.0.113.7", "203.0.113.7", "127.0.0.1"]


async def test_forwarded_for_ignored_from_an_untrusted_peer(start, caplog):
    client = await start(server={"access_log": True, "trusted_proxies": ["10.0.0.0/8"]})
    await get(client, "/healthz", **{"X-Forwarded-For": "203.0.113.7"})
    assert json.loads((await lines(caplog, 1))[0])["client"] == "127.0.0.1"


async def test_bytes_are_body_bytes(start, caplog):
    # max_object_bytes below the picture: memory skips it and the disk layer serves
    # it with sendfile, whose bytes never pass through aiohttp's writer
    client = await start(memory={"max_object_bytes": 1000})
    first = await get(client, "/images/default_pfp.png")
    assert first.headers["X-Cache"] == "MISS"
    disk = await get(client, "/images/default_pfp.png")
    assert disk.headers["X-Cache"] == "HIT-DISK"
    await get(client, "/images/default_pfp.png", method="HEAD")
    await get(client, "/images/default_pfp.png", **{"If-None-Match": first.headers["ETag"]})
    await get(client, "/images/a//bad")
    records = [json.loads(line) for line in await lines(caplog, 5)]
    assert [(r["status"], r["layer"], r["bytes"]) for r in records] == [
        (200, "MISS", len(PFP)), (200, "HIT-DISK", len(PFP)), (200, "HIT-DISK", 0),
        (304, "HIT-DISK", 0), (400, "ERROR", records[4]["bytes"])]
    assert records[2]["method"] == "HEAD"
    assert records[4]["bytes"] > 0  # the JSON error body


async def test_classic_format(start, caplog):
    client = await start(server={"access_log": True, "access_log_format": "classic"})
    resp = await get(client, "/images/default_pfp.png",
                     **{"X-Forwarded-For": "203.0.113.9", "User-Agent": 'evil"\tagent'})
    line = (await lines(caplog, 1))[0]
    assert "\n" not in line
    pattern = (r'^203\.0\.113\.9 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
               r'"GET /images/default_pfp\.png HTTP/1\.1" 200 (\d+) "-" "evil\\"\\x09agent" '
               r'MISS (\d+\.\d{6}) (\S+) -$')
    match = re.match(pattern, line)
    assert match, line
    assert int(match.group(1)) == len(PFP)
    assert float(match.group(2)) > 0
    assert match.group(3) == resp.headers["X-Request-Id"]  # the trace id: "-", untraced


# An existing key with what a log line must survive: unicode, a space, quotes, '%2F'.
ODD = "/images/%E6%97%A5%20%22q%22%27%5C/user%2F42.png?cb=%22"


async def test_json_line_of_an_odd_key_is_the_target_as_sent(start, caplog, origin_dir):
    (origin_dir / '日 "q"\'\\').mkdir()
    (origin_dir / '日 "q"\'\\' / "user").mkdir()
    (origin_dir / '日 "q"\'\\' / "user" / "42.png").write_bytes(PFP)
    client = await start()
    resp = await get(client, URL(ODD, encoded=True))
    assert (resp.status, resp.headers["X-Cache"]) == (200, "MISS")
    line = (await lines(caplog, 1))[0]
    assert "\n" not in line
    assert json.loads(line)["path"] == ODD  # not decoded: %2F stays apart from '/'


async def test_classic_line_of_an_odd_key(start, caplog):
    client = await start(server={"access_log": True, "access_log_format": "classic"})
    await get(client, URL(ODD, encoded=True))
    line = (await lines(caplog, 1))[0]
    assert "\n" not in line
    assert f'"GET {ODD} HTTP/1.1" 200 ' in line  # FALLBACK: nothing of that name here


async def test_access_log_off(aiohttp_client, gateway_config, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    config = gateway_config(server={"access_log": False})
    assert access_log_settings(config.server) == {"access_log": None}
    client = await aiohttp_client(await serve(config))
    await get(client, "/healthz")
    await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_output_is_bare_lines_on_their_own_handler():
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    stream = io.StringIO()
    try:
        setup_access_log_output(stream)
        setup_access_log_output(stream)  # idempotent: one handler, not two
        logger.info('{"status":200}')
        assert stream.getvalue() == '{"status":200}\n'
        assert logger.propagate is False
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in saved[0]:
            logger.addHandler(handler)
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


async def test_request_id_in_the_answer_and_the_line(start, caplog):
    client = await start()
    kept = await get(client, "/images/default_pfp.png", **{"X-Request-Id": "req-1:a.B_9"})
    made = await get(client, "/images/default_pfp.png")
    bad = await get(client, "/images/default_pfp.png", **{"X-Request-Id": "a b\u00e9"})
    error = await get(client, URL("/images/a%2", encoded=True),
                      **{"X-Request-Id": "from-nginx-42"})
    records = [json.loads(line) for line in await lines(caplog, 4)]
    assert kept.headers["X-Request-Id"] == "req-1:a.B_9"  # well-formed: kept
    assert made.headers["X-Request-Id"] != bad.headers["X-Request-Id"]
    assert bad.headers["X-Request-Id"] != "a b\u00e9"  # not the rule: a new one
    assert error.status == 400
    assert (await error.json())["request_id"] == "from-nginx-42"
    assert [r["request_id"] for r in records] == [
        "req-1:a.B_9", made.headers["X-Request-Id"], bad.headers["X-Request-Id"],
        "from-nginx-42"]
    assert all("trace_id" not in r for r in records)  # tracing is off
