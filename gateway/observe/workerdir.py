"""The folder where the workers of one gateway publish their counters.

Kept apart from statshub.py (which needs the whole server stack) because the
supervisor creates it and should import nothing heavy.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

SHARED_DIR_ENV = "IMAGE_GATEWAY_STATS_DIR"


def prepare_shared_dir() -> str:
    """For the supervisor, before it spawns workers: a fresh folder for their
    snapshots, named in the environment the workers inherit, removed at exit."""
    path = tempfile.mkdtemp(prefix="image-gateway-stats-")
    os.environ[SHARED_DIR_ENV] = path
    atexit.register(shutil.rmtree, path, True)
    return path
