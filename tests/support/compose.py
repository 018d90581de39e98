"""deploy/compose.yaml's gateway service, turned into ``podman run`` flags.

The container tests run the gateway exactly as compose defines it, so the two
cannot drift: every key of the service is either translated (environment,
healthcheck, init, read_only, tmpfs, stop_signal, stop_grace_period, volumes) or
deliberately left to the test (build, image, restart, depends_on, see IGNORED);
a key this module does not know fails the test run instead of being dropped.
The environment is taken as it is, but for the addresses, ports and secrets of
the test's own Redis, S3 and token (OVERRIDABLE).

    service = gateway_service()                     # the merged x-gateway definition
    run = podman_run(service, overrides={...}, cache_volume="gw-1-cache")
    run.args       # ["--init", "--read-only", ..., "-e", "GATEWAY_...=..."]
    run.stop_timeout, run.healthcheck
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from . import REPO_ROOT

COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"

# Keys the test decides for itself, and why.
IGNORED = {
    "build": "the test builds deploy/Dockerfile itself (checked to be the same file)",
    "image": "the test's own tag of that build",
    "restart": "a restarted container would hide the exit code the test checks",
    "depends_on": "the test starts Redis and S3 before the gateways",
}

# What may differ between compose and the test: where things are, and secrets.
OVERRIDABLE = frozenset({
    "GATEWAY_SERVER_HOST", "GATEWAY_SERVER_PORT",   # host network: one port each
    "GATEWAY_S3_ENDPOINT", "GATEWAY_S3_BUCKET", "GATEWAY_S3_REGION",
    "GATEWAY_REDIS_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "GATEWAY_ADMIN_TOKEN", "GATEWAY_CLUSTER_SECRET",
})

_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def gateway_services(compose: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The gateway services (those built from deploy/Dockerfile), by name."""
    services = (compose or load())["services"]
    return {name: dict(service) for name, service in services.items()
            if isinstance(service.get("build"), dict)
            and service["build"].get("dockerfile") == "deploy/Dockerfile"}


def gateway_service() -> dict[str, Any]:
    """The first gateway service; they all merge one definition (x-gateway)."""
    return next(iter(gateway_services().values()))


def interpolate(value: Any, env: Mapping[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and $$, as with no .env file."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        return env.get(match.group(1)) or (match.group(2) or "")

    text = str(value).replace("$$", "\0")
    return _VARIABLE.sub(one, text).replace("\0", "$")


def seconds(duration: str | int | float) -> float:
    """A compose duration ("15s", "1m30s", "500ms") in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"compose.yaml: not a duration: {duration!r}")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(v) for k, v in env.items()}


@dataclass(frozen=True)
class PodmanRun:
    args: list[str]
    env: dict[str, str]
    stop_timeout: int
    healthcheck: dict[str, Any]
    cache_path: str


def podman_run(service: Mapping[str, Any], *, overrides: Mapping[str, str],
               cache_volume: str) -> PodmanRun:
    """``podman run`` flags for ``service`` (image and name not included)."""
    unknown = set(overrides) - OVERRIDABLE
    if unknown:
        raise ValueError(f"only addresses, ports and secrets may differ, not {sorted(unknown)}")
    args: list[str] = []
    env = environment(service)
    env.update(overrides)
    stop_timeout = 10  # compose's default grace period
    healthcheck: dict[str, Any] = {}
    cache_path = ""
    for key, value in service.items():
        if key in IGNORED:
            continue
        if key == "environment":
            continue  # above
        elif key == "init":
            args += ["--init"] if value else []
        elif key == "read_only":
            # Only what compose lists as tmpfs is writable (podman would add its own).
            args += ["--read-only", "--read-only-tmpfs=false"] if value else []
        elif key == "tmpfs":
            for path in [value] if isinstance(value, str) else value:
                args += ["--tmpfs", str(path)]
        elif key == "stop_signal":
            args += ["--stop-signal", str(value)]
        elif key == "stop_grace_period":
            stop_timeout = int(seconds(value))
            args += ["--stop-timeout", str(stop_timeout)]
        elif key == "healthcheck":
            healthcheck = dict(value)
            args += _healthcheck_args(healthcheck)
        elif key == "volumes":
            paths = [str(v).split(":")[1] for v in value]
            if len(paths) != 1:
                raise ValueError(f"compose.yaml: one cache volume expected, got {value}")
            cache_path = paths[0]
            args += ["-v", f"{cache_volume}:{cache_path}"]
        else:
            raise ValueError(f"compose.yaml: the gateway service's key {key!r} is not "
                             "translated by tests/support/compose.py: add it there")
    for name, text in sorted(env.items()):
        args += ["-e", f"{name}={text}"]
    return PodmanRun(args=args, env=env, stop_timeout=stop_timeout, healthcheck=healthcheck,
                     cache_path=cache_path)


def _healthcheck_args(check: Mapping[str, Any]) -> list[str]:
    test = check["test"]
    if not (isinstance(test, list) and test and test[0] == "CMD"):
        raise ValueError(f"compose.yaml: healthcheck test must be the CMD form, got {test!r}")
    # The interval's timer needs systemd, which these machines do not run as PID 1:
    # the test runs the check itself (`podman healthcheck run`).
    args = ["--health-cmd", json.dumps(test[1:]), "--health-interval", "disable"]
    for key, flag in (("timeout", "--health-timeout"), ("start_period", "--health-start-period")):
        if key in check:
            args += [flag, f"{seconds(check[key]):g}s"]
    if "retries" in check:
        args += ["--health-retries", str(int(check["retries"]))]
    return args


def image_healthcheck_matches(service_check: Mapping[str, Any],
                              image_check: Mapping[str, Any]) -> list[str]:
    """Differences between compose's healthcheck and an image's (docker inspect form:
    Test, Interval/Timeout/StartPeriod in ns, Retries); empty when they agree."""
    diffs = []
    if list(service_check["test"]) != list(image_check.get("Test") or []):
        diffs.append(f"test: {service_check['test']} != {image_check.get('Test')}")
    for key, field in (("interval", "Interval"), ("timeout", "Timeout"),
                       ("start_period", "StartPeriod")):
        want = round(seconds(service_check[key]) * 1e9)
        if want != int(image_check.get(field) or 0):
            diffs.append(f"{key}: {service_check[key]} != {image_check.get(field)} ns")
    if int(service_check["retries"]) != int(image_check.get("Retries") or 0):
        diffs.append(f"retries: {service_check['retries']} != {image_check.get('Retries')}")
    return diffs
