"""The README's settings table names every setting config/gateway.toml has, with its
GATEWAY_* variable: an operator finds each one in one place."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documented() -> dict[str, str]:
    """setting -> its row, from the table under '## Settings'."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Settings"):]
    section = section[:section.index("\n## ", 1)]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith(("| setting", "| ---")):
            continue
        first = line.split("|")[1]
        group = ""
        for item in re.split(r" / |, ", first.strip()):
            if "." in item:
                group, _, item = item.partition(".")
            rows[f"{group}.{item}"] = line
    return rows


def test_every_setting_is_in_the_readme_table() -> None:
    settings = tomllib.loads((ROOT / "config" / "gateway.toml").read_text())
    rows = documented()
    missing = [f"{section}.{name}" for section, values in settings.items()
               for name in values if f"{section}.{name}" not in rows]
    assert not missing, f"README settings table lacks {missing}"


def test_each_row_names_its_environment_variables() -> None:
    for setting, row in documented().items():
        section, name = setting.split(".")
        env = f"GATEWAY_{section}_{name}".upper()
        assert (env in row or f"_{name.upper()}" in row or "..." in row
                or setting.startswith("s3.")), f"{setting}: no variable named in {row}"
