"""The OpenAI-compatible API under /v1: chat and text completions, models, OpenAI's errors."""
