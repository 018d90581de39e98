"""A real S3 endpoint over HTTP: moto's threaded server on a free port.

    server = S3Server()                  # started: server.endpoint == "http://127.0.0.1:N"
    bucket = server.bucket()             # a fresh, uniquely named bucket
    bucket.put("a.png", data)            # -> ETag (quoted, as S3 sends it)
    bucket.delete("a.png")
    bucket.env(proxy.url)                # GATEWAY_* settings for a gateway subprocess
    server.close()

Moto checks neither signatures nor expiry of presigned URLs, and keeps all
buckets in this process's memory. The clients here talk to it directly with
retries off, path-style addressing and the dummy credentials "testing".
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from moto.server import ThreadedMotoServer

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"

BOTO_CONFIG = BotoConfig(
    signature_version="s3v4",
    s3={"addressing_style": "path"},
    retries={"max_attempts": 0},
    connect_timeout=5,
    read_timeout=10,
)


def s3_client(endpoint: str) -> Any:
    """A sync boto3 S3 client for ``endpoint`` (moto, or a proxy in front of it)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=BOTO_CONFIG,
    )


class S3Bucket:
    """One bucket on the moto server, with the operations tests need."""

    def __init__(self, endpoint: str, name: str, client: Any) -> None:
        self.endpoint = endpoint
        self.bucket = name
        self.client = client

    def put(self, key: str, body: bytes, content_type: str = "image/png",
            **extra: Any) -> str:
        """Store an object; returns its ETag as S3 sends it (with quotes)."""
        reply = self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                       ContentType=content_type, **extra)
        return str(reply["ETag"])

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def head(self, key: str) -> dict[str, Any]:
        return dict(self.client.head_object(Bucket=self.bucket, Key=key))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def presign(self, key: str, expires: int = 3600, endpoint: str | None = None) -> str:
        """A SigV4 presigned GET URL, signed for ``endpoint`` (default: moto itself)."""
        client = self.client if endpoint is None else s3_client(endpoint)
        try:
            return str(client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires))
        finally:
            if client is not self.client:
                client.close()

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """GATEWAY_* variables that point a gateway at this bucket (or via ``endpoint``)."""
        return {
            "GATEWAY_ORIGIN_KIND": "s3",
            "GATEWAY_S3_ENDPOINT": endpoint or self.endpoint,
            "GATEWAY_S3_BUCKET": self.bucket,
            "GATEWAY_S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def destroy(self) -> None:
        """Delete every object, then the bucket."""
        for key in self.keys():
            self.delete(key)
        self.client.delete_bucket(Bucket=self.bucket)

    def __repr__(self) -> str:
        return f"<S3Bucket {self.endpoint}/{self.bucket}>"


class S3Server:
    def __init__(self, start: bool = True) -> None:
        self._server: ThreadedMotoServer | None = None
        self.endpoint = ""
        self.port = 0
        self.client: Any = None
        if start:
            self.start()

    def start(self) -> None:
        if self._server is not None:
            return
        # werkzeug logs every request at INFO; keep test output readable
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        _, self.port = server.get_host_and_port()
        self._server = server
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.client = s3_client(self.endpoint)

    def bucket(self, name: str | None = None) -> S3Bucket:
        """Create a bucket (a unique name unless given) and return its helper."""
        name = name or f"test-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return S3Bucket(self.endpoint, name, self.client)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        # ThreadedMotoServer.stop() leaves the listening socket open
        inner = getattr(server, "_server", None)
        if inner is not None:
            inner.server_close()
        if self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<S3Server {self.endpoint or 'stopped'}>"
