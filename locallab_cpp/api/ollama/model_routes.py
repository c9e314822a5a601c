"""GET /api/version, /api/tags, /api/ps; POST /api/show, /api/pull; DELETE /api/delete
(to be written)."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

MODEL_ROUTES: tuple[ControllerRouterHandler, ...] = ()
"""The model routes."""
