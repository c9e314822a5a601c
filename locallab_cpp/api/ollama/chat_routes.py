"""POST /api/chat and POST /api/generate (to be written)."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

CHAT_ROUTES: tuple[ControllerRouterHandler, ...] = ()
"""The chat and generate routes."""
