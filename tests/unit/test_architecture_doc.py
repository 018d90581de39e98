"""docs/ARCHITECTURE.md's Redis table is RedisKeys.table(), row for row; and every
module the doc's map names exists."""

from __future__ import annotations

import inspect
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
    """Each key builder's key (its argument a placeholder) is a row of the table, and
    each row is one builder's: by name, not by count."""
    parsers = ("table", "image_of_version", "user_of_legacy")
    builders = sorted(name for name in vars(RedisKeys)
                      if not name.startswith("_") and name not in parsers)
    keys = RedisKeys("profile_pic", "{deployment}")

    def placeholder(key: str) -> str:  # {key}, {user_id}, {cache_key}... -> {x}
        return re.sub(r"\{(?!deployment\})[a-z_]+\}", "{x}", key)

    built = {name: placeholder(getattr(keys, name)(
        *["{x}"] * (len(inspect.signature(getattr(keys, name)).parameters))))
        for name in builders}
    built["invalidate"] = keys.invalidate  # a channel: an attribute, not a method
    rows = [placeholder(k.pattern) for k in RedisKeys.table()]
    assert sorted(built.values()) == sorted(rows), built
    assert len(set(rows)) == len(rows)
    assert RedisKeys("p", "d").invalidate == "p:d:invalidate"


def test_modules_named_in_the_map_exist() -> None:
    text = DOC.read_text()
    block = text[text.index("## Module map"):text.index("## Redis keys")]
    root = DOC.parents[1] / "gateway"
    for name in re.findall(r"\b([a-z_]+\.py)\b", block):
        assert list(root.rglob(name)), f"docs/ARCHITECTURE.md names {name}, which is gone"
