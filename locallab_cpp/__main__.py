"""``python -m locallab_cpp``."""

from __future__ import annotations

from locallab_cpp.cli import main

raise SystemExit(main())
