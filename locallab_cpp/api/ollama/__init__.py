"""Ollama's API (/api/*) over the serving core: its chat and generate streams as NDJSON,
its model listing, show, ps, pull and delete, and its ``{"error": "..."}`` bodies."""
