"""StoredUrlCheck: a presigned URL read back from Redis is used only if it is one this
deployment signs for that key. The URLs that must pass are botocore's own."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from gateway.origin.presign import StoredUrlCheck

BUCKET = "profile-images"


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """S3 clients configured as web/app.py configures them (nothing goes on the wire:
    presigning is local)."""
    clients: list[Any] = []

    async def make(endpoint: str | None = None, region: str = "us-east-1",
                   token: str | None = None) -> Any:
        context = get_session().create_client(
            "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id="AKID",
            aws_secret_access_key="secret", aws_session_token=token,
            config=AioConfig(signature_version="s3v4", s3={"addressing_style": "path"}))
        client = await context.__aenter__()
        clients.append(context)
        return client

    yield make
    for context in clients:
        await context.__aexit__(None, None, None)


async def signed(client: Any, key: str, bucket: str = BUCKET, expires: int = 3600) -> str:
    return str(await client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires))


def check_for(client: Any, bucket: str = BUCKET) -> StoredUrlCheck:
    return StoredUrlCheck(client.meta.endpoint_url, bucket)


@pytest.mark.parametrize(("endpoint", "region"), [
    ("http://127.0.0.1:9000", "us-east-1"), ("https://minio.example.com/", "us-east-1"),
    ("https://s3.example.com:8443/s3/", "eu-west-1"), ("http://[::1]:9000", "us-east-1"),
    (None, "us-east-1"), (None, "eu-central-1"),
], ids=["minio", "https-default-port", "path-and-port", "ipv6", "aws", "aws-regional"])
@pytest.mark.parametrize("key", ["a.png", "users/7/a b+c~ü.png", "pre/fix-a.png"])
async def test_what_botocore_signs_passes(make_client: Any, endpoint: str | None,
                                          region: str, key: str) -> None:
    client = await make_client(endpoint, region)
    assert check_for(client).problem(await signed(client, key), key) is None


async def test_temporary_credentials_pass(make_client: Any) -> None:
    client = await make_client("http://127.0.0.1:9000", token="session-token")
    url = await signed(client, "a.png")
    assert "X-Amz-Security-Token=" in url
    assert check_for(client).problem(url, "a.png") is None


async def test_the_aws_endpoint_is_the_regions(make_client: Any) -> None:
    east, west = await make_client(None, "us-east-1"), await make_client(None, "us-west-2")
    url = await signed(west, "a.png")
    assert check_for(west).problem(url, "a.png") is None
    assert check_for(east).problem(url, "a.png") == "another endpoint"


ENDPOINT = "http://127.0.0.1:9000"
GOOD_QUERY = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20300101%2Fus-east-1"
              "%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires=3600"
              "&X-Amz-SignedHeaders=host&X-Amz-Signature=00ff")


def stored(base: str = f"{ENDPOINT}/{BUCKET}/a.png", query: str = GOOD_QUERY,
           signed_at: float | None = None) -> str:
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at or time.time()))
    return f"{base}?{query.format(date=date)}"


def test_a_well_formed_url_for_the_key_passes() -> None:
    assert StoredUrlCheck(ENDPOINT, BUCKET).problem(stored(), "a.png") is None
    assert StoredUrlCheck(ENDPOINT + "/", BUCKET).problem(stored(), "a.png") is None


@pytest.mark.parametrize(("url", "problem"), [
    (stored("http://127.0.0.2:9000/profile-images/a.png"), "another endpoint"),
    (stored("http://127.0.0.1:9001/profile-images/a.png"), "another endpoint"),
    (stored("https://127.0.0.1:9000/profile-images/a.png"), "another endpoint"),
    (stored("http://evil.example/profile-images/a.png"), "another endpoint"),
    (stored("http://127.0.0.1:9000@evil.example/profile-images/a.png"), "another endpoint"),
    (stored("http://evil.example@127.0.0.1:9000/profile-images/a.png"), "another endpoint"),
    (stored("http://evil.example\\@127.0.0.1:9000/profile-images/a.png"), "not a plain URL"),
    (stored("//127.0.0.1:9000/profile-images/a.png"), "another endpoint"),
    (stored("/profile-images/a.png"), "another endpoint"),
    (stored("http://127.0.0.1:9000/other-bucket/a.png"), "another bucket or key"),
    (stored("http://127.0.0.1:9000/profile-images/b.png"), "another bucket or key"),
    (stored("http://127.0.0.1:9000/profile-images/../other-bucket/a.png"),
     "another bucket or key"),
    (stored("http://127.0.0.1:9000/profile-images/%61.png"), "another bucket or key"),
    (stored("http://127.0.0.1:9000/profile-images/a.png/"), "another bucket or key"),
    (stored("http://127.0.0.1:9000//profile-images/a.png"), "another bucket or key"),
    (stored("http://127.0.0.1:9000/profile-images/a.png#x"), "a fragment"),
    (stored(signed_at=time.time() - 3601), "expired"),
    (stored(query=GOOD_QUERY.replace("3600", "0")), "not a SigV4 presigned URL"),
    (stored(query=GOOD_QUERY.replace("3600", "604801")), "not a SigV4 presigned URL"),
    (stored(query=GOOD_QUERY.replace("3600", "-1")), "not a SigV4 presigned URL"),
    (stored(query=GOOD_QUERY + "&versionId=old"), "not a SigV4 presigned URL"),
    (stored(query=GOOD_QUERY + "&response-content-type=text%2Fhtml"),
     "not a SigV4 presigned URL"),
    (stored(query=GOOD_QUERY + "&X-Amz-Signature=11"), "not a SigV4 presigned URL"),
    (stored(query=GOOD_QUERY.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1")),
     "not a SigV4 presigned URL"),
    (stored(query="X-Amz-Signature=00ff"), "not a SigV4 presigned URL"),
    (stored(query=""), "not a SigV4 presigned URL"),
    (stored("http://127.0.0.1:9000/profile-images/a.png\r\nHost: evil"), "not a plain URL"),
    (stored("http://127.0.0.1:9000/profile-images/a .png"), "not a plain URL"),
    ("http://127.0.0.1:9000/profile-images/ä.png", "not a plain URL"),
    ("", "not a plain URL"),
    ("javascript:alert(1)", "another endpoint"),
], ids=lambda v: v if len(v) < 30 else None)
def test_anything_else_is_refused(url: str, problem: str) -> None:
    assert StoredUrlCheck(ENDPOINT, BUCKET).problem(url, "a.png") == problem


def test_the_key_is_compared_as_botocore_encodes_it() -> None:
    check = StoredUrlCheck(ENDPOINT, BUCKET)
    url = stored(f"{ENDPOINT}/{BUCKET}/dir/a%20b%2Bc~.png")
    assert check.problem(url, "dir/a b+c~.png") is None
    assert check.problem(stored(f"{ENDPOINT}/{BUCKET}/dir/a+b%2Bc~.png"),
                         "dir/a b+c~.png") == "another bucket or key"
    assert check.problem(stored(f"{ENDPOINT}/{BUCKET}/dir%2Fa%20b%2Bc~.png"),
                         "dir/a b+c~.png") == "another bucket or key"
