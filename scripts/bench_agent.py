"""Claude Code's and Codex's real first requests, cold and next turn: ``bench/agent.py``.

Kept as a command; ``python scripts/bench.py --phase agent`` runs the same phase::

    .venv/bin/python scripts/bench_agent.py [--threads 2] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.agent import main

if __name__ == "__main__":
    raise SystemExit(main())
