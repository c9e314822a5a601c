"""The editor workload, ours beside llama-server: ``bench/editor.py`` (autocomplete) and
``bench/embeddings.py``::

    .venv/bin/python scripts/bench_editor.py --phase infill       # a few minutes
    .venv/bin/python scripts/bench_editor.py --phase embeddings
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.editor import main

if __name__ == "__main__":
    sys.exit(main())
