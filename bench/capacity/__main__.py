"""python -m bench.capacity: see bench/capacity/__init__.py and docs/CAPACITY.md."""

import sys

from bench.capacity.cli import main

sys.exit(main())
