"""gateway.config: the shipped file, env overrides, validation, secrets."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, fill_secret
from gateway.config_load import load
from tests.support import REPO_ROOT

CONFIG_FILE = REPO_ROOT / "config" / "gateway.toml"
MiB = 1024 * 1024


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


# --- the shipped file ---------------------------------------------------------


def test_shipped_file_equals_the_defaults() -> None:
    assert load(CONFIG_FILE, environ={}) == Config()


def test_shipped_file_names_every_setting_in_order() -> None:
    """Every field of every section is in the file, sections in Config's order."""
    data = tomllib.loads(CONFIG_FILE.read_text())
    sections = typing.get_type_hints(Config)
    assert list(data) == list(sections)
    for name, cls in sections.items():
        if name == "presets":  # the operator's own names, not fields
            assert list(data[name]) == [n for n, _ in Config().presets.named]
            continue
        fields = [f.name for f in dataclasses.fields(cls)]
        assert list(data[name]) == fields, f"[{name}] in {CONFIG_FILE.name}"


def test_every_setting_has_a_comment() -> None:
    lines = CONFIG_FILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            assert lines[i - 1].lstrip().startswith("#"), f"no comment above: {line}"


def test_default_cache_control_promises_what_the_gateway_does() -> None:
    """Browsers and CDNs may serve their copy while revalidating, and while the gateway
    fails, exactly as long as the gateway itself does; 'public' is not needed."""
    config = Config()
    directives = dict(part.strip().partition("=")[::2]
                      for part in config.http.cache_control.split(","))
    assert directives == {"max-age": "2700",
                          "stale-while-revalidate": str(int(config.fetch.refresh_ahead)),
                          "stale-if-error": str(config.disk.max_stale)}
    for name in ("fallback_cache_control", "user_cache_control", "stale_cache_control"):
        assert "public" not in getattr(config.http, name), name


def test_secrets_in_the_shipped_file_are_empty() -> None:
    data = tomllib.loads(CONFIG_FILE.read_text())
    assert data["s3"]["access_key_id"] == ""
    assert data["s3"]["secret_access_key"] == ""
    assert data["admin"]["token"] == ""
    assert data["redis"]["url"] == ""
    assert data["cluster"]["secret"] == ""


def test_no_file_means_defaults() -> None:
    assert load(None, environ={}) == Config()


# --- environment overrides ----------------------------------------------------


def test_environment_wins_over_the_file() -> None:
    config = load(CONFIG_FILE, environ={
        "GATEWAY_MEMORY_MAX_BYTES": "64MiB",
        "GATEWAY_SERVER_WORKERS": "4",
        "GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0",  # more than one worker needs it
        "GATEWAY_CLUSTER_SECRET": "c" * 32,  # and Redis this
        "GATEWAY_ORIGIN_KIND": "s3",
        "GATEWAY_DISK_ENABLED": "false",
        "GATEWAY_PRESIGN_EXPIRES": "7200",
        "GATEWAY_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.0/16",
    })
    assert config.memory.max_bytes == 67108864
    assert config.server.workers == 4
    assert config.origin.kind == "s3"
    assert config.disk.enabled is False
    assert config.presign.expires == 7200
    assert config.server.trusted_proxies == ("10.0.0.0/8", "192.168.0.0/16")
    # untouched settings keep the file's values
    assert config.server.port == 8080


def test_environment_wins_over_a_custom_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\nworkers = 2\n"
                           "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n"
                           f"[cluster]\nsecret = \"{'c' * 32}\"\n")
    config = load(path, environ={"GATEWAY_SERVER_PORT": "9100"})
    assert (config.server.port, config.server.workers) == (9100, 2)


@pytest.mark.parametrize(("text", "expected"), [
    ("1024", 1024), ("64MiB", 64 * MiB), ("64 mib", 64 * MiB), ("2GiB", 2 * 1024 * MiB),
    ("1.5KiB", 1536), ("10MB", 10_000_000), ("256_000", 256_000),
])
def test_sizes_take_units(text: str, expected: int) -> None:
    config = load(None, environ={"GATEWAY_MEMORY_MAX_BYTES": text})
    assert config.memory.max_bytes == expected


def test_file_sizes_take_units(tmp_path: Path) -> None:
    path = write(tmp_path, '[memory]\nmax_bytes = "32MiB"\n[disk]\nmax_bytes = 1048576\n')
    config = load(path, environ={})
    assert config.memory.max_bytes == 32 * MiB
    assert config.disk.max_bytes == MiB


# --- bad values name the setting and show the value ----------------------------


def error_for(environ: dict[str, str] | None = None, text: str | None = None,
              tmp_path: Path | None = None) -> str:
    path = write(tmp_path, text) if text is not None and tmp_path is not None else None
    with pytest.raises(ConfigError) as info:
        load(path, environ=environ or {})
    return str(info.value)


@pytest.mark.parametrize(("environ", "setting", "shown"), [
    ({"GATEWAY_MEMORY_MAX_BYTES": "-1"}, "memory.max_bytes", "-1"),
    ({"GATEWAY_DISK_MAX_BYTES": "-5MiB"}, "disk.max_bytes", "-5MiB"),
    ({"GATEWAY_ORIGIN_KIND": "ftp"}, "origin.kind", "'ftp'"),
    ({"GATEWAY_S3_ENDPOINT": "not a url"}, "s3.endpoint", "'not a url'"),
    ({"GATEWAY_S3_ENDPOINT": "http://"}, "s3.endpoint", "'http://'"),
    ({"GATEWAY_S3_BUCKET": "Bad_Bucket"}, "s3.bucket", "'Bad_Bucket'"),
    ({"GATEWAY_SERVER_PORT": "70000"}, "server.port", "70000"),
    ({"GATEWAY_SERVER_PORT": "eighty"}, "server.port", "'eighty'"),
    ({"GATEWAY_SERVER_WORKERS": "0"}, "server.workers", "0"),
    ({"GATEWAY_SERVER_ACCESS_LOG": "maybe"}, "server.access_log", "'maybe'"),
    ({"GATEWAY_ORIGIN_READ_TIMEOUT": "soon"}, "origin.read_timeout", "'soon'"),
    ({"GATEWAY_SERVER_TRUSTED_PROXIES": "10.0.0.0/8,nope"}, "server.trusted_proxies", "'nope'"),
    ({"GATEWAY_PRESIGN_CACHE_TTL": "3600"}, "presign.cache_ttl", "3600"),
    ({"GATEWAY_PRESIGN_EXPIRES": "30"}, "presign.expires", "30"),
    ({"GATEWAY_DISK_TTL_JITTER": "1.5"}, "disk.ttl_jitter", "1.5"),
    ({"GATEWAY_HTTP_CACHE_CONTROL": "public\nx"}, "http.cache_control", "'public\\nx'"),
    ({"GATEWAY_FALLBACK_IMAGE": "/nonexistent/pic.png"}, "fallback.image",
     "'/nonexistent/pic.png'"),
])
def test_bad_values_name_the_setting_and_the_value(environ: dict[str, str], setting: str,
                                                   shown: str) -> None:
    message = error_for(environ)
    assert message.startswith(f"{setting}:"), message
    assert shown in message, message


def test_cache_ttl_must_be_below_expires_in_the_file(tmp_path: Path) -> None:
    message = error_for(text="[presign]\nexpires = 600\ncache_ttl = 600\n", tmp_path=tmp_path)
    assert message.startswith("presign.cache_ttl: 600")
    assert "presign.expires" in message


def test_several_workers_need_redis() -> None:
    message = error_for({"GATEWAY_SERVER_WORKERS": "2"})
    assert message == ("server.workers: 2 needs redis.url: without Redis a purge or alias "
                       "change reaches only the worker that took it")
    assert load(None, environ={"GATEWAY_SERVER_WORKERS": "2",
                               "GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0",
                               "GATEWAY_CLUSTER_SECRET": "c" * 32}).server.workers == 2


def test_redis_url_must_be_redis_and_is_not_echoed() -> None:
    # a Redis URL may carry a password, so the message names the setting only
    message = error_for({"GATEWAY_REDIS_URL": "http://x"})
    assert message.startswith("redis.url:")
    assert "http://x" not in message
    assert "redis" in message.split(":", 1)[1]


def test_admin_token_too_short_is_not_echoed() -> None:
    message = error_for({"GATEWAY_ADMIN_TOKEN": "short-secret"})
    assert message.startswith("admin.token:")
    assert "short-secret" not in message


def test_cluster_secret_too_short_is_not_echoed() -> None:
    message = error_for({"GATEWAY_CLUSTER_SECRET": "short-cluster-secret"})
    assert message.startswith("cluster.secret:") and "32 characters" in message
    assert "short-cluster-secret" not in message


REDIS = {"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0"}
S3 = {"GATEWAY_ORIGIN_KIND": "s3"}
AWS_SECRET = {"AWS_SECRET_ACCESS_KEY": "aws-secret-key"}
CLUSTER_SECRET = {"GATEWAY_CLUSTER_SECRET": "c" * 32}


@pytest.mark.parametrize("environ", [REDIS, {**REDIS, **AWS_SECRET}, {**REDIS, **S3}],
                         ids=["local", "local-with-aws-key", "s3-without-a-key"])
def test_redis_needs_a_cluster_secret_or_an_s3_key(environ: dict[str, str]) -> None:
    """Replicas sign what they hand each other through Redis: with nothing to sign with,
    the start is refused with one line naming the setting."""
    message = error_for(environ)
    assert message.startswith("cluster.secret: required when redis.url is set"), message


@pytest.mark.parametrize(("environ", "source"), [
    ({}, ""),
    (AWS_SECRET, ""),  # the local origin does not use the AWS key
    ({**S3, **AWS_SECRET}, "aws-secret-key"),
    ({**REDIS, **S3, **AWS_SECRET}, "aws-secret-key"),
    ({**REDIS, **CLUSTER_SECRET}, "c" * 32),
    ({**REDIS, **S3, **AWS_SECRET, **CLUSTER_SECRET}, "c" * 32),
])
def test_the_fill_secret_comes_from_cluster_secret_else_the_s3_key(
        environ: dict[str, str], source: str) -> None:
    assert fill_secret(load(None, environ=environ)) == source


def test_signing_keys_in_a_bad_format_are_not_echoed() -> None:
    message = error_for({"GATEWAY_SIGNING_KEYS": "k1:0123456789abcdef0123,k2:too-short"})
    assert message.startswith("signing.keys:")
    assert "'id:secret'" in message
    assert "too-short" not in message
    assert "0123456789abcdef0123" not in message


@pytest.mark.parametrize(("environ", "start"), [
    ({"GATEWAY_ORIGIN_ROOT": ""}, "origin.root: must name a folder"),
    ({"GATEWAY_DISK_PATH": ""}, "disk.path: must name a folder"),
    ({"GATEWAY_SIGNING_REQUIRED": "true"}, "signing.required: true needs"),
    ({"GATEWAY_TRANSFORM_DEFAULT_QUALITY": "55"}, "transform.default_quality: 55"),
])
def test_rules_that_tie_two_settings_together(environ: dict[str, str], start: str) -> None:
    assert error_for(environ).startswith(start)


def test_rules_that_tie_settings_together_hold_when_both_are_set() -> None:
    load(None, environ={"GATEWAY_ORIGIN_ROOT": "", "GATEWAY_ORIGIN_KIND": "s3",
                        "GATEWAY_DISK_PATH": "", "GATEWAY_DISK_ENABLED": "false",
                        "GATEWAY_SIGNING_REQUIRED": "true",
                        "GATEWAY_SIGNING_KEYS": "k1:0123456789abcdef0123"})


def _gateway_imports(module: str) -> set[str]:
    tree = ast.parse((REPO_ROOT / "gateway" / module).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "." for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    return {name for name in imported if name.startswith(("gateway", "."))}


def test_config_imports_nothing_from_gateway() -> None:
    """A leaf: every module may import the settings without an import cycle (config.py
    takes its field checks from config_checks.py, a leaf itself)."""
    assert _gateway_imports("config.py") == {"gateway.config_checks"}
    assert _gateway_imports("config_checks.py") == set()


@pytest.mark.parametrize(("text", "setting", "shown"), [
    ("[nope]\nx = 1\n", "nope", "unknown section"),
    ("[server]\nprot = 8080\n", "server.prot", "unknown setting"),
    ('[server]\naccess_log = "yes"\n', "server.access_log", "'yes'"),
    ("[disk]\nenabled = 1\n", "disk.enabled", "1"),
    ("[memory]\nmax_bytes = -1\n", "memory.max_bytes", "-1"),
    ('[memory]\nmax_bytes = "lots"\n', "memory.max_bytes", "'lots'"),
    ('[origin]\nkind = "gcs"\n', "origin.kind", "'gcs'"),
    ("[server]\nport = 8080.5\n", "server.port", "8080.5"),
    ('[server]\ntrusted_proxies = "10.0.0.0/8"\n', "server.trusted_proxies", "'10.0.0.0/8'"),
    ('server = "x"\n', "server", "table"),
])
def test_bad_file_values_name_the_setting(tmp_path: Path, text: str, setting: str,
                                          shown: str) -> None:
    message = error_for(text=text, tmp_path=tmp_path)
    assert message.startswith(f"{setting}:"), message
    assert shown in message, message


def test_unreadable_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[server\n"), environ={})


# --- credentials ------------------------------------------------------------------


SECRETS_TOML = """
[s3]
access_key_id = "AKIAFROMFILE"
secret_access_key = "secret-from-file"
[redis]
url = "redis://:redis-password@127.0.0.1:6379/0"
[admin]
token = "admin-token-0123456789"
[cluster]
secret = "cluster-secret-0123456789abcdef0123456789"
"""


def test_aws_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, SECRETS_TOML)
    from_file = load(path, environ={})
    assert from_file.s3.access_key_id == "AKIAFROMFILE"
    assert from_file.s3.secret_access_key == "secret-from-file"
    from_env = load(path, environ={"AWS_ACCESS_KEY_ID": "AKIAFROMENV",
                                   "AWS_SECRET_ACCESS_KEY": "secret-from-env"})
    assert from_env.s3.access_key_id == "AKIAFROMENV"
    assert from_env.s3.secret_access_key == "secret-from-env"


def test_secrets_never_appear_in_repr(tmp_path: Path) -> None:
    config = load(write(tmp_path, SECRETS_TOML), environ={
        "AWS_SECRET_ACCESS_KEY": "secret-from-env",
        "GATEWAY_ADMIN_TOKEN": "env-admin-token-abcdef",
    })
    assert config.redis.url.startswith("redis://")
    text = repr(config) + str(config)
    for secret in ("AKIAFROMFILE", "secret-from-env", "secret-from-file",
                   "redis-password", "env-admin-token-abcdef", "admin-token-0123456789",
                   "cluster-secret-0123456789abcdef0123456789"):
        assert secret not in text


# --- the command line ----------------------------------------------------------------


def test_bad_config_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """Needs gateway/__main__.py."""
    path = write(tmp_path, "[memory]\nmax_bytes = -1\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "AWS_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "memory.max_bytes" in lines[0]
    assert "-1" in lines[0]
