"""RedisKeys and the deployment: every name carries where the bytes live, so
deployments sharing one Redis never share a key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cluster.redis import RedisKeys, deployment_of, keys_for
from gateway.config_load import load

S3 = {"GATEWAY_ORIGIN_KIND": "s3", "GATEWAY_S3_ENDPOINT": "http://minio:9000",
      "GATEWAY_S3_BUCKET": "profile-images", "AWS_SECRET_ACCESS_KEY": "k"}


def deployment(**env: str) -> str:
    return deployment_of(load(None, environ={**S3, **env}))


def test_every_name_carries_the_prefix_and_the_deployment() -> None:
    keys = RedisKeys("pp", "0123456789ab")
    names = [keys.url("a.png"), keys.user("bob"), keys.version("a.png"),
             keys.lease("a.png/1/"), keys.fill("a.png/1/"), keys.invalidate,
             keys.version_pattern]
    assert all(name.startswith("pp:0123456789ab:") for name in names)
    assert len({name.split(":")[2] for name in names}) == 6  # one kind word each
    assert keys.image_of_version(keys.version("a.png").encode()) == "a.png"
    assert keys.legacy_user("bob") == "pp:user:bob"
    assert keys.user_of_legacy(b"pp:user:bob") == "bob"


def test_the_deployment_is_stable_and_short() -> None:
    assert deployment() == deployment()
    assert len(deployment()) == 12 and int(deployment(), 16) >= 0
    # The same endpoint written with a trailing slash is the same deployment.
    assert deployment(GATEWAY_S3_ENDPOINT="http://minio:9000/") == deployment()
    # Credentials, region, the prefix of Redis keys: none of them says where bytes live.
    assert deployment(AWS_SECRET_ACCESS_KEY="other", GATEWAY_S3_REGION="eu-west-1",
                      GATEWAY_REDIS_PREFIX="pp") == deployment()


@pytest.mark.parametrize("change", [
    {"GATEWAY_S3_BUCKET": "other-bucket"}, {"GATEWAY_S3_ENDPOINT": "http://minio2:9000"},
    {"GATEWAY_S3_ENDPOINT": ""}, {"GATEWAY_S3_PREFIX": "avatars/"},
    {"GATEWAY_ORIGIN_KIND": "local"},
])
def test_where_the_bytes_live_makes_another_deployment(change: dict[str, str]) -> None:
    assert deployment(**change) != deployment()


def test_a_local_origin_is_named_by_its_absolute_folder(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    local = {"GATEWAY_ORIGIN_KIND": "local"}
    monkeypatch.chdir(tmp_path)
    relative = deployment(**local, GATEWAY_ORIGIN_ROOT="pics")
    absolute = deployment(**local, GATEWAY_ORIGIN_ROOT=os.path.join(tmp_path, "pics"))
    assert relative == absolute
    assert deployment(**local, GATEWAY_ORIGIN_ROOT="other") != relative


def test_keys_for_a_config() -> None:
    config = load(None, environ={**S3, "GATEWAY_REDIS_PREFIX": "pp"})
    keys = keys_for(config)
    assert keys.user("bob") == f"pp:{deployment_of(config)}:user:bob"
