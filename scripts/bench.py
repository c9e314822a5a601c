"""Benchmark locallab_cpp against llama.cpp in-process and llama.cpp's llama-server.

The code is the package ``scripts/bench/`` (its ``__init__`` describes the standing
figures; ``--phase agent`` and ``--phase agent-cache`` the agent workloads). This file is the
command::

    python scripts/bench.py                       # standing figures (a few minutes on 2 cores)
    python scripts/bench.py --quick               # smoke test: tiny workloads, figures meaningless
    python scripts/bench.py --markdown docs/benchmarks.md
    python scripts/bench.py --phase agent-cache   # the agent workload with the prompt cache

Run as a script, this file's folder is first on ``sys.path``, and there the package
``bench/`` is found before this module (a package directory wins over a module of the same
name), so ``import bench`` anywhere in scripts/ is the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
