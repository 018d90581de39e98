"""python -m bench: see bench/__init__.py."""

import sys

from bench.run import main

sys.exit(main())
