"""The service worker's logic under Node's test runner (tests/js/): part of `make test`,
which installs Node (tools/ensure-system-deps.sh node). Real Chromium runs the same
script in tests/integration/test_client_worker.py."""

from __future__ import annotations

import shutil
import subprocess

from tests.support import REPO_ROOT


def test_node_tests_of_the_worker_pass() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is not installed: make system-deps (tools/ensure-system-deps.sh node)"
    done = subprocess.run([node, "--test", "tests/js/"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout
