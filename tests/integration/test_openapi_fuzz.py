"""schemathesis against a live gateway (S3 on moto, admin API on): every check, a
bounded number of examples; no server error, no answer outside the document.

Positive mode: the document's key patterns are a safe subset of the key grammar
(README, Object keys), which no OpenAPI path parameter can state whole (a key's
``/`` is a literal ``/`` or ``%2F``; ``.`` and ``..`` segments are refused in any
encoding), and unknown query parameters are accepted on purpose (cache busters).
Negative mode would report exactly those as "schema-violating request accepted";
refusals of bad keys are tested in test_object_keys.py and test_hostile.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.web import openapi

TOKEN = "fuzz-" + "t" * 32


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_schemathesis_finds_nothing(spawn_gateway, s3, make_image, tmp_path):
    for name in ("a.png", "b.jpg", "c.webp"):  # some of what it asks for exists
        s3.put(name, make_image(fmt={"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[
            name.rsplit(".", 1)[1]], seed=len(name)))
    gateway = spawn_gateway({**s3.env(), "GATEWAY_ADMIN_TOKEN": TOKEN})
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run",
        f"{gateway.url}/openapi.json", "--checks", "all", "--max-examples", "15",
        "--mode", "positive", "--seed", "16", "--header", f"Authorization: Bearer {TOKEN}",
        "--report-dir", str(tmp_path), "--no-color",
    ]
    # cwd: schemathesis keeps a cache of past failures in ./.schemathesis and replays
    # them; each run starts clean, in its own folder (not the repository).
    run = subprocess.run(command, capture_output=True, text=True, timeout=140, check=False,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
    operations = sum(len([m for m in item if not m.startswith("x-")])
                     for item in openapi.load()["paths"].values())
    # Every operation, admin included (schemathesis leaves out the URL it read the
    # document from: GET /openapi.json).
    assert f"Tested: {operations - 1}" in run.stdout, run.stdout[-3000:]
    assert gateway.running  # no crash
