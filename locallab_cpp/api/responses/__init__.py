"""OpenAI's Responses API (/v1/responses): what Codex CLI and the Agents SDK speak."""
