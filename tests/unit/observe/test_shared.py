"""gateway.observe.shared: the supervisor's side of the shared folder.

The reading and writing of workers' files is tested through the hub (test_hub.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IMAGE_GATEWAY_STATS_DIR", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True, timeout=60)
    return done.stdout


def test_the_supervisor_import_stays_light():
    out = run("import sys, json, gateway.observe.shared\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(json.loads(out))
    assert not loaded & {"aiohttp", "prometheus_client", "redis", "PIL", "aiobotocore"}


def test_prepare_shared_dir_names_a_fresh_folder_and_removes_it_at_exit():
    out = run("import os\n"
              "from gateway.observe.shared import SHARED_DIR_ENV, prepare_shared_dir\n"
              "path = prepare_shared_dir()\n"
              "assert os.environ[SHARED_DIR_ENV] == path\n"
              "assert os.path.isdir(path) and not os.listdir(path)\n"
              "open(os.path.join(path, 'w-1-1.json'), 'w').close()\n"
              "print(path)")
    path = Path(out.strip())
    assert path.name.startswith("image-gateway-stats-")
    assert not path.exists()
