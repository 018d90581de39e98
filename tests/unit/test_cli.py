"""The command line: serve (the default), check-config, sign, migrate-aliases; and what
it imports."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis

from gateway import __main__ as cli, server
from gateway.cluster.redis import keys_for
from gateway.config import Config, ConfigError
from gateway.config_load import load
from gateway.web.signing import UrlSigner
from tests.support import REPO_ROOT

KEYS = ["new:fedcba9876543210fedc", "old:0123456789abcdef0123"]


def run_gateway(*args: str, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ARGS`` as a real process, with only the GATEWAY_* given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AWS_"))}
    clean["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env={**clean, **(env or {})},
        cwd=cwd or REPO_ROOT, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Stands in for the server: records the config it would have served."""
    calls: list[Config] = []

    def fake_run(config: Config) -> int:
        calls.append(config)
        return 0

    monkeypatch.setattr(server, "run", fake_run)
    return calls


def settings_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return str(path)


# --- sign ------------------------------------------------------------------------------


def test_sign_prints_paths_the_signer_verifies() -> None:
    result = run_gateway("sign", "/images/abc.png", "/images/abc.png?w=64",
                         env={"GATEWAY_SIGNING_KEYS": ",".join(KEYS)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("s=")[0] for line in lines] == ["/images/abc.png?",
                                                       "/images/abc.png?w=64&"]
    verifier = UrlSigner(KEYS)
    assert all(verifier.verify(line) for line in lines)
    assert not UrlSigner(KEYS[1:]).verify(lines[0])  # signed with the first key
    assert result.stderr == ""


def test_sign_reads_keys_from_the_config_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(tmp_path, f'[signing]\nkeys = ["{KEYS[0]}"]\n')
    assert cli.main(["--config", path, "sign", "/images/a.png"]) == 0
    assert UrlSigner(KEYS[:1]).verify(capsys.readouterr().out.strip())
    assert cli.main(["sign", "--config", path, "/images/b.png"]) == 0
    assert UrlSigner(KEYS[:1]).verify(capsys.readouterr().out.strip())


def test_sign_falls_back_to_gateway_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Where the former ``python -m gateway.web.signing`` looked for its file."""
    monkeypatch.setenv("GATEWAY_CONFIG",
                       settings_file(tmp_path, f'[signing]\nkeys = ["{KEYS[1]}"]\n'))
    assert cli.main(["sign", "/images/a.png"]) == 0
    assert UrlSigner(KEYS[1:]).verify(capsys.readouterr().out.strip())


def test_sign_without_keys_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sign", "/images/a.png"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "signing.keys is empty" in captured.err


def test_sign_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["sign"])
    assert info.value.code == 2
    assert "usage: image-gateway sign" in capsys.readouterr().err


def test_a_bad_key_is_refused_without_showing_it(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SIGNING_KEYS", "k1:too-short")
    assert cli.main(["sign", "/images/a.png"]) == 2
    err = capsys.readouterr().err
    assert "signing.keys:" in err
    assert "too-short" not in err


# --- migrate-aliases -------------------------------------------------------------------

SECRET = {"GATEWAY_CLUSTER_SECRET": "a-cluster-secret-for-the-tests-0123456789"}


def test_migrate_aliases_needs_redis(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate-aliases"]) == 2
    assert "redis.url is not set" in capsys.readouterr().err


def test_migrate_aliases_copies_and_reports(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    env = {**SECRET, "GATEWAY_REDIS_URL": redis_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    keys = keys_for(load(None, env))
    redis = Redis.from_url(redis_url)
    try:
        redis.mset({"profile_pic:user:bob": "b.png",
                    "profile_pic:user:mal": "../other-bucket/x",
                    "profile_pic:user:\x1b[2Jx": "c.png"})
        assert cli.main(["migrate-aliases"]) == 0
        assert redis.get(keys.user("bob")) == b"b.png"
        assert redis.exists(keys.user("mal")) == 0
    finally:
        redis.close()
    out = capsys.readouterr().out
    assert f"profile_pic:user:* -> profile_pic:{keys.deployment}:user:*" in out
    assert "skipped 'profile_pic:user:mal': not a valid image key" in out
    assert "\x1b" not in out  # a key name from Redis is shown escaped, never raw
    assert out.rstrip().endswith("1 copied, 0 already set (kept), 2 skipped")


def test_migrate_aliases_without_a_working_redis_exits_1(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens
    monkeypatch.setenv("GATEWAY_CLUSTER_SECRET", SECRET["GATEWAY_CLUSTER_SECRET"])
    assert cli.main(["migrate-aliases"]) == 1
    assert "running it again is safe" in capsys.readouterr().err


# --- check-config ----------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["check-config"], ["--check-config"]])
def test_check_config_exits_0_for_usable_settings(
        argv: list[str], served: list[Config], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == "image-gateway: config ok\n"
    assert served == []


@pytest.mark.parametrize("argv", [["check-config", "--config", "{path}"],
                                  ["--config", "{path}", "check-config"],
                                  ["--check-config", "--config", "{path}"]])
def test_check_config_exits_2_with_one_line(argv: list[str], tmp_path: Path,
                                            served: list[Config],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(tmp_path, "[server]\nport = 70000\n")
    assert cli.main([arg.format(path=path) for arg in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("image-gateway: config error: server.port: 70000")
    assert served == []


def test_check_config_as_a_process() -> None:
    ok = run_gateway("check-config", "--config", "config/gateway.toml")
    assert (ok.returncode, ok.stdout) == (0, "image-gateway: config ok\n")
    bad = run_gateway("--check-config", env={"GATEWAY_SERVER_WORKERS": "0"})
    assert bad.returncode == 2
    assert bad.stderr.startswith("image-gateway: config error: server.workers: 0")


def test_several_workers_without_redis_refuse_to_start() -> None:
    refused = run_gateway(env={"GATEWAY_SERVER_WORKERS": "2"})
    assert refused.returncode == 2
    assert refused.stderr == ("image-gateway: config error: server.workers: 2 needs "
                              "redis.url: without Redis a purge or alias change reaches "
                              "only the worker that took it\n")


def test_the_flag_does_not_go_with_another_command(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--check-config", "sign", "/images/a.png"])
    assert info.value.code == 2
    assert "--check-config" in capsys.readouterr().err


# --- serve and the rest ----------------------------------------------------------------


@pytest.mark.parametrize(("argv", "port"), [
    ([], 8080), (["serve"], 8080), (["--config", "{path}"], 9123),
    (["serve", "--config", "{path}"], 9123), (["--config", "{path}", "serve"], 9123),
])
def test_serve_is_the_default_command(argv: list[str], port: int, tmp_path: Path,
                                      served: list[Config]) -> None:
    path = settings_file(tmp_path, "[server]\nport = 9123\n")
    assert cli.main([arg.format(path=path) for arg in argv]) == 0
    assert [config.server.port for config in served] == [port]


def test_unknown_command_exits_2_with_usage() -> None:
    result = run_gateway("frobnicate")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: image-gateway")
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert result.stdout == ""


def test_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "check-config", "sign", "migrate-aliases", "--config FILE"):
        assert command in out


def test_the_worker_target_is_importable_by_name() -> None:
    """A spawned worker finds its target by module and name (multiprocessing spawn)."""
    assert server.worker_entry.__module__ == "gateway.server"
    assert pickle.loads(pickle.dumps(server.worker_entry)) is server.worker_entry


def test_the_cli_and_supervisor_import_no_server_stack() -> None:
    """The supervisor of N workers only spawns and watches them: it stays light, also
    once it has read the settings (presets are checked without Pillow)."""
    code = ("import sys, gateway.__main__, gateway.server; "
            "from gateway.config_load import load; "
            "from gateway.variants.spec import check_presets; "
            "load('config/gateway.toml', {}, (check_presets,)); "
            "print(' '.join(sorted(m for m in ('aiohttp', 'redis', 'PIL', 'aiobotocore', "
            "'uvloop', 'botocore') if m in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            cwd=REPO_ROOT, text=True, timeout=30, check=True)
    assert result.stdout.strip() == ""


def test_sign_with_ttl_adds_an_expiry_the_signature_covers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(tmp_path, f'[signing]\nkeys = ["{KEYS[0]}"]\n')
    before = int(time.time())
    assert cli.main(["--config", path, "sign", "--ttl", "3600", "/images/a.png?w=64"]) == 0
    signed = capsys.readouterr().out.strip()
    assert signed.startswith("/images/a.png?w=64&exp=")
    expires = int(signed.split("exp=")[1].split("&")[0])
    assert before + 3600 <= expires <= int(time.time()) + 3600
    assert UrlSigner(KEYS[:1]).verify(signed)
    with pytest.raises(SystemExit):
        cli.main(["--config", path, "sign", "--ttl", "soon", "/images/a.png"])
    assert "a whole number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize(("table", "said"), [
    ('avatar = "w=65"', "presets.avatar: w must be one of"),
    ('avatar = "w=64&preset=x"', "presets.avatar: 'preset' is not one of"),
    ('avatar = "w=64&&"', "presets.avatar: 'w=64&&' is not a query string"),
    ('"Bad Name" = "w=64"', "presets.Bad Name: a preset name is"),
    ("avatar = 64", "presets.avatar: 64 is not a string"),
])
def test_check_config_refuses_a_bad_preset_with_one_line(
        table: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(tmp_path, f"[presets]\n{table}\n")
    assert cli.main(["check-config", "--config", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err


def test_presets_from_the_environment_and_presets_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load(None, environ={"GATEWAY_PRESETS_THUMB": "w=32&h=32",
                                 "GATEWAY_PRESETS_AVATAR": ""})
    assert config.presets.named == (("thumb", "w=32&h=32"),)
    with pytest.raises(ConfigError, match=r"variants\.presets_only"):
        load(None, environ={"GATEWAY_PRESETS_AVATAR": "",
                            "GATEWAY_VARIANTS_PRESETS_ONLY": "true"})
