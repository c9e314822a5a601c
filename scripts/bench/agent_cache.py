"""The agent-cache phase (issue 22); its workload comes in the next commit."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This phase's flags (none yet)."""


def main(args: argparse.Namespace) -> int:
    """Not written yet."""
    raise SystemExit("--phase agent-cache: not written yet")
