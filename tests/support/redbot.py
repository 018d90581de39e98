"""REDbot (a third-party HTTP linter) on one URL, run in its own process.

    python -m tests.support.redbot URL [NAME: VALUE ...]

prints, as JSON, the response's status and REDbot's notes on it (``{"id", "level",
"summary"}``, subnotes flattened in), the request carrying the given headers.
REDbot runs its own event loop (thor), so tests call it as a subprocess: ``lint``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from configparser import ConfigParser
from typing import Any


def _check(url: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    import thor
    from redbot.resource import HttpResource

    parser = ConfigParser()
    parser.read_dict({"redbot": {"enable_local_access": "True"}})
    resource = HttpResource(parser["redbot"])
    resource.set_request(url, headers=headers)

    @thor.events.on(resource)
    def check_done() -> None:
        thor.stop()

    resource.check()
    thor.run()
    if not resource.response.complete:
        raise RuntimeError(f"REDbot got no complete response from {url}")
    out: list[dict[str, str]] = []

    def add(note: Any) -> None:
        out.append({"id": type(note).__name__, "level": note.level.name,
                    "summary": note.summary})
        for sub in note.subnotes:
            add(sub)

    for note in resource.response.notes:
        add(note)
    return {"status": int(resource.response.status_code or 0), "notes": out}


async def lint(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``{"status": ..., "notes": [...]}``: REDbot on ``url`` requested with ``headers``."""
    args = [f"{name}: {value}" for name, value in (headers or {}).items()]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.redbot", url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"REDbot failed on {url}: {err.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(out)
    return result


if __name__ == "__main__":
    pairs = [tuple(part.strip() for part in arg.split(":", 1)) for arg in sys.argv[2:]]
    print(json.dumps(_check(sys.argv[1], [(k, v) for k, v in pairs])))
