"""docs/ARCHITECTURE.md's Redis table is RedisKeys.table(), row for row; and every
module the doc's map names exists."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.cluster.redis import RedisKeys

DOC = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"
BEGIN = "<!-- redis-keys"
END = "<!-- /redis-keys -->"


def render_table() -> list[str]:
    rows = ["| key | value | TTL |", "| --- | --- | --- |"]
    rows += [f"| `{k.pattern}` | {k.value} | {k.ttl} |" for k in RedisKeys.table()]
    return rows


def documented_table() -> list[str]:
    text = DOC.read_text()
    start = text.index(BEGIN)
    block = text[text.index("\n", start) + 1:text.index(END)]
    return [line for line in block.splitlines() if line.strip()]


def test_redis_table_matches_the_code() -> None:
    assert documented_table() == render_table(), (
        "docs/ARCHITECTURE.md's Redis table is out of date; the rows should be:\n"
        + "\n".join(render_table()))


def test_the_table_covers_every_key_builder() -> None:
    parsers = ("table", "image_of_version", "user_of_legacy")
    builders = {name for name in vars(RedisKeys)
                if not name.startswith("_") and name not in parsers}
    keys = RedisKeys("p", "d")
    patterns = {k.pattern for k in RedisKeys.table()}
    assert len(patterns) == len(builders | {"invalidate"})
    assert keys.invalidate == "p:d:invalidate"


def test_modules_named_in_the_map_exist() -> None:
    text = DOC.read_text()
    block = text[text.index("## Module map"):text.index("## Redis keys")]
    root = DOC.parents[1] / "gateway"
    for name in re.findall(r"\b([a-z_]+\.py)\b", block):
        assert list(root.rglob(name)), f"docs/ARCHITECTURE.md names {name}, which is gone"
