"""Capture what the real Codex CLI sends to an OpenAI Responses-compatible server.

Starts a stub server on a free loopback port that records every request (method, path,
query, headers, body) and answers like a minimal Responses API: ``POST /v1/responses``
gets one assistant message ("hello"), streamed as Responses SSE events when the request
asks for ``stream: true`` and as one JSON response otherwise; ``GET /v1/models`` gets an
empty list; anything else gets a 404 in OpenAI's error shape. Then it runs ``codex exec``
from tests/node (``npm ci --prefix tests/node`` first) against the stub with a temporary
CODEX_HOME whose config.toml names the stub as the model provider (codex_config_toml).

    python scripts/capture_codex.py --out /tmp/codex-capture [--prompt "Say hello"]

The output folder gets ``requests.jsonl`` (one record per request, bodies parsed when JSON),
``body-N.json`` (each request body as sent) and ``codex.json`` (the CLI's stdout, exit
status and stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from capture_stub import Recorder, RecordingHandler, sse

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = REPO_ROOT / "tests" / "node" / "node_modules" / ".bin" / "codex"


def codex_config_toml(base_url: str, model: str = "gemma-3-270m") -> str:
    """A config.toml pointing Codex at ``base_url`` (ending in /v1) and at nothing else:
    no update check, no analytics or telemetry export, no web search, no approvals asked."""
    return f"""\
model = "{model}"
model_provider = "local"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false
web_search = "disabled"

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[model_providers.local]
name = "locallab"
base_url = "{base_url}"
wire_api = "responses"
requires_openai_auth = false
"""


def codex_env(home: str) -> dict[str, str]:
    """The environment Codex runs with: its own CODEX_HOME and HOME, no OpenAI key."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "CODEX_HOME": str(Path(home) / ".codex"),
        "RUST_LOG": "warn",
        "NO_COLOR": "1",
    }


def response(model: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "resp_capture_0001",
        "object": "response",
        "created_at": 0,
        "status": status,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 1,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 11,
        },
    }


MESSAGE = {
    "type": "message",
    "id": "msg_capture_0001",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "hello", "annotations": []}],
}


def stream_events(model: str) -> bytes:
    events = [
        ("response.created", {"response": response(model, "in_progress", [])}),
        ("response.output_item.added", {"output_index": 0, "item": {**MESSAGE, "content": []}}),
        (
            "response.output_text.delta",
            {"output_index": 0, "item_id": MESSAGE["id"], "content_index": 0, "delta": "hello"},
        ),
        ("response.output_item.done", {"output_index": 0, "item": MESSAGE}),
        ("response.completed", {"response": response(model, "completed", [MESSAGE])}),
    ]
    return b"".join(
        sse(name, {"type": name, "sequence_number": n, **data})
        for n, (name, data) in enumerate(events)
    )


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def sanitize(body: dict[str, Any], home: str) -> dict[str, Any]:
    """A captured request body without what identifies the machine or the session: the
    temporary home becomes /tmp/codex-home, session uuids a fixed one, the date and
    time zone in the environment context fixed values."""
    text = json.dumps(body, ensure_ascii=False).replace(home, "/tmp/codex-home")
    text = UUID.sub("00000000-0000-4000-8000-000000000000", text)
    text = re.sub(
        r"<current_date>[^<]*</current_date>", "<current_date>2025-01-01</current_date>", text
    )
    text = re.sub(r"<timezone>[^<]*</timezone>", "<timezone>UTC</timezone>", text)
    clean: dict[str, Any] = json.loads(text)
    return clean


def make_handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(RecordingHandler):
        recorder = rec

        def do_GET(self) -> None:
            self._record()
            if urlsplit(self.path).path == "/v1/models":
                self._json(200, {"object": "list", "data": []})
            else:
                self._not_found()

        def do_POST(self) -> None:
            body = self._record()
            path = urlsplit(self.path).path
            request = body if isinstance(body, dict) else {}
            model = str(request.get("model", "stub"))
            if path == "/v1/responses" and request.get("stream"):
                self._send(200, stream_events(model), "text/event-stream")
            elif path == "/v1/responses":
                self._json(200, response(model, "completed", [MESSAGE]))
            else:
                self._not_found()

        def _not_found(self) -> None:
            error = {"message": f"no route {self.path}", "type": "invalid_request_error"}
            self._json(404, {"error": {**error, "param": None, "code": "not_found"}})

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the capture")
    parser.add_argument("--prompt", default="Say hello")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--cli", type=Path, default=CLI, help="the codex executable")
    parser.add_argument(
        "--fixture", type=Path, help="write the first Responses request here, sanitized"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "requests.jsonl").unlink(missing_ok=True)

    recorder = Recorder(args.out)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(recorder))
    port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="codex-home-") as home:
        env = codex_env(home)
        Path(env["CODEX_HOME"]).mkdir()
        config = codex_config_toml(f"http://127.0.0.1:{port}/v1", args.model)
        (Path(env["CODEX_HOME"]) / "config.toml").write_text(config, encoding="utf-8")
        cmd = [str(args.cli), "exec", "--skip-git-repo-check", args.prompt]
        try:
            done = subprocess.run(
                cmd,
                env=env,
                cwd=home,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=args.timeout,
                check=False,
            )
            rc: int | None = done.returncode
            stdout, stderr = done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stdout, stderr = None, exc.stdout or b"", exc.stderr or b""
        if args.fixture is not None:
            bodies = [
                r["body"]
                for r in recorder.records
                if r["path"] == "/v1/responses" and isinstance(r["body"], dict)
            ]
            if bodies:
                clean = sanitize(bodies[0], home)
                text = json.dumps(clean, indent=1, ensure_ascii=False) + "\n"
                args.fixture.write_text(text, encoding="utf-8")
    httpd.shutdown()
    result = {
        "command": cmd,
        "exit_status": rc,
        "stdout": stdout.decode(errors="replace"),
        "stderr": stderr.decode(errors="replace"),
        "requests": [
            f"{r['method']} {r['path']}{'?' + r['query'] if r['query'] else ''} "
            f"({r['body_bytes']} bytes)"
            for r in recorder.records
        ],
    }
    (args.out / "codex.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
