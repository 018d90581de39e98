"""/admin/stats, /admin/stats/reset and /admin/cache/clear (admin token required).

These handlers live in the admin sub-app: app-level keys are read through
``request.config_dict``, and its guard (web/admin.py) marks every answer no-store.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import BadRequest
from gateway.observe.report import build_report
from gateway.web.edge import Routes
from gateway.web.keys import PARTS


async def get_stats(request: web.Request) -> web.Response:
    raw = request.query.get("top", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequest("top must be a whole number from 1 to 100")
    hub = request.config_dict[PARTS].hub
    aggregate = await hub.aggregate()
    report = build_report(aggregate, await hub.baseline(), request.config_dict[PARTS].config,
                          top=int(raw))
    return web.json_response(report)


async def reset_stats(request: web.Request) -> web.Response:
    baseline = await request.config_dict[PARTS].hub.reset()
    return web.json_response({"success": True, "since": round(baseline.at, 3),
                              "generation": baseline.generation})


async def clear_cache(request: web.Request) -> web.Response:
    hub = request.config_dict[PARTS].hub
    memory, disk = await request.config_dict[PARTS].cache.clear()
    await hub.request_clear()
    return web.json_response({
        "success": True,
        "cleared": {"memory_entries": memory, "disk_entries": disk},
        "other_workers": ("told to clear theirs within "
                          f"{hub.publish_interval:g} s") if hub.shared else "none",
    })


def add_routes(routes: Routes) -> None:
    routes.get("/stats", get_stats, allow_head=False)
    routes.post("/stats/reset", reset_stats)
    routes.post("/cache/clear", clear_cache)
