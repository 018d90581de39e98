"""The settings shipped in deploy/ are accepted by the gateway's own config loader."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.config_load import from_mapping

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TOKEN = "a-token-long-enough-for-the-check"


def test_k8s_configmap_loads():
    env = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())["data"]
    config = from_mapping({}, {k: str(v) for k, v in env.items()})
    assert config.origin.kind == "s3"
    assert config.limits.rate > 0 and config.server.trusted_proxies


def test_compose_gateway_environment_loads():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gateways = [s for name, s in compose["services"].items() if name.startswith("gateway")]
    assert len(gateways) == 2
    for service in gateways:
        env = {k: str(v) for k, v in service["environment"].items()}
        # ${VAR:-default} is compose's own interpolation: give what compose would.
        env = {k: (TOKEN if v.startswith("${") else v) for k, v in env.items()}
        config = from_mapping({}, env)
        assert config.s3.endpoint == "http://minio:9000"
        assert config.redis.url
