"""Anthropic's Messages API: POST /v1/messages (streamed as named SSE events or whole) and
POST /v1/messages/count_tokens."""
