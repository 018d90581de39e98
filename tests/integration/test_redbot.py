"""REDbot, a third-party HTTP linter, finds nothing to warn about in the gateway's
image answers: an original, variants, the fallback and 304s (issue 12).

REDbot fetches each URL from a real gateway process, then probes it with its own
conditional and ranged requests. A note at level WARN or BAD fails the test, unless
it is listed in NOT_APPLICABLE with the reason it does not apply here.
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from gateway.config_checks import ASSETS
from tests.support.redbot import lint

PFP = (ASSETS / "default_pfp.png").read_bytes()

#: REDbot note ids that do not apply to the gateway, each with the reason. (None so far:
#: with "public" dropped from Cache-Control, STORE_PUBLIC_UNNECESSARY went away.)
NOT_APPLICABLE: dict[str, str] = {}


@pytest.fixture
def gateway(spawn_gateway):
    gw = spawn_gateway({"GATEWAY_SERVER_ACCESS_LOG": "false"})
    (gw.dir / "origin" / "p.png").write_bytes(PFP)
    return gw


def _validators(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.headers["ETag"], resp.headers["Last-Modified"]


@pytest.mark.timeout(120)
async def test_redbot_finds_no_warning_on_image_answers(gateway):
    base = f"{gateway.url}/images"
    variant = f"{base}/p.png?w=64&h=64&format=webp"
    negotiated = f"{base}/p.png?w=32&format=auto"  # Vary: Accept
    etag, last_modified = await asyncio.to_thread(_validators, f"{base}/p.png")
    variant_etag, _ = await asyncio.to_thread(_validators, variant)
    cases = {
        "image": (f"{base}/p.png", {}, 200),
        "variant": (variant, {}, 200),
        "negotiated variant": (negotiated, {"Accept": "image/webp"}, 200),
        "fallback": (f"{base}/missing.png", {}, 200),
        "304 by ETag": (f"{base}/p.png", {"If-None-Match": etag}, 304),
        "304 by date": (f"{base}/p.png", {"If-Modified-Since": last_modified}, 304),
        "variant 304": (variant, {"If-None-Match": variant_etag}, 304),
    }
    for what, (url, headers, status) in cases.items():
        result = await lint(url, headers)
        assert result["status"] == status, what
        complaints = [note for note in result["notes"]
                      if note["level"] in ("WARN", "BAD") and note["id"] not in NOT_APPLICABLE]
        assert complaints == [], what
