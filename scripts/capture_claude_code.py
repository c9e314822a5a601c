"""Capture what the real Claude Code CLI sends to an Anthropic-compatible server.

Starts a stub server on a free loopback port that records every request (method, path,
query, headers, body) and answers like a minimal Anthropic Messages API: ``POST
/v1/messages`` gets one text block ("hello"), streamed as SSE named events when the request
asks for ``stream: true`` and as one JSON message otherwise; ``POST
/v1/messages/count_tokens`` gets a rough count; ``HEAD /`` and ``GET /`` get 200; anything
else gets a 404 in Anthropic's error shape. Then it runs the CLI from tests/node
(``npm ci --prefix tests/node`` first) against the stub with a temporary HOME and reports.

    python scripts/capture_claude_code.py --out /tmp/capture [--prompt "Say hello"]

The output folder gets ``requests.jsonl`` (one record per request, bodies parsed when JSON),
``body-N.json`` (each request body as sent) and ``claude.json`` (the CLI's stdout, exit
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
CLI = REPO_ROOT / "tests" / "node" / "node_modules" / ".bin" / "claude"

# Environment that keeps Claude Code to the one server it is pointed at: no telemetry, no
# auto-update, no error reporting, no feature-flag or other "non-essential" traffic.
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
}

USAGE = {
    "input_tokens": 10,
    "output_tokens": 1,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}


def message(model: str, content: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_capture_0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": dict(USAGE),
        **extra,
    }


def stream_events(model: str) -> bytes:
    return b"".join(
        [
            sse("message_start", {"type": "message_start", "message": message(model, [])}),
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse("ping", {"type": "ping"}),
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "hello"},
                },
            ),
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 1},
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]
    )


SESSION_ID = "00000000-0000-4000-8000-000000000000"


def sanitize(body: dict[str, Any], home: str) -> dict[str, Any]:
    """A captured request body without what identifies the machine or the session.

    The device id and session id in ``metadata.user_id`` become fixed values, the temporary
    HOME (the working directory) becomes ``/tmp/claude-home`` and the kernel version in
    the environment section becomes ``Linux 6.0.0``.
    """
    text = json.dumps(body, ensure_ascii=False).replace(home, "/tmp/claude-home")
    text = re.sub(r"OS Version: Linux [^\\\s\"]+", "OS Version: Linux 6.0.0", text)
    clean: dict[str, Any] = json.loads(text)
    metadata = clean.get("metadata") or {}
    if isinstance(metadata.get("user_id"), str):
        try:
            user = json.loads(metadata["user_id"])
        except ValueError:
            user = None
        if isinstance(user, dict):
            user.update(device_id="0" * 64, session_id=SESSION_ID)
            metadata["user_id"] = json.dumps(user, separators=(",", ":"))
        else:
            metadata["user_id"] = "user_0"
    return clean


def make_handler(
    rec: Recorder, head_status: int = 200, fail_status: int | None = None
) -> type[BaseHTTPRequestHandler]:
    class Handler(RecordingHandler):
        recorder = rec
        extra_headers = {"request-id": "req_capture"}

        def do_HEAD(self) -> None:
            self._record()
            self._send(head_status, b"", "text/plain")

        def do_GET(self) -> None:
            self._record()
            if urlsplit(self.path).path == "/":
                self._send(200, b"ok", "text/plain")
            else:
                self._not_found()

        def do_POST(self) -> None:
            body = self._record()
            path = urlsplit(self.path).path
            request = body if isinstance(body, dict) else {}
            model = str(request.get("model", "stub"))
            if fail_status is not None and path.startswith("/v1/messages"):
                error = {"type": "api_error", "message": f"stub answers {fail_status}"}
                self._json(fail_status, {"type": "error", "error": error})
            elif path == "/v1/messages/count_tokens":
                self._json(200, {"input_tokens": max(1, len(json.dumps(request)) // 4)})
            elif path == "/v1/messages" and request.get("stream"):
                self._send(200, stream_events(model), "text/event-stream")
            elif path == "/v1/messages":
                done = message(model, [{"type": "text", "text": "hello"}])
                done["stop_reason"] = "end_turn"
                self._json(200, done)
            else:
                self._not_found()

        def _not_found(self) -> None:
            self._json(
                404,
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": f"no route {self.path}"},
                },
            )

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the capture")
    parser.add_argument("--prompt", default="Say hello")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--output-format", default="json")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--cli", type=Path, default=CLI, help="the claude executable")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment"
    )
    parser.add_argument("--head-status", type=int, default=200, help="the answer to HEAD")
    parser.add_argument(
        "--fail-status", type=int, help="answer /v1/messages with an error of this status"
    )
    parser.add_argument(
        "--fixture", type=Path, help="write the first Messages request here, sanitized"
    )
    parser.add_argument("--loud", action="store_true", help="leave out the quiet environment")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "requests.jsonl").unlink(missing_ok=True)

    recorder = Recorder(args.out)
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), make_handler(recorder, args.head_status, args.fail_status)
    )
    port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="claude-home-") as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
            "ANTHROPIC_AUTH_TOKEN": "sk-local",
            **({} if args.loud else QUIET_ENV),
            **dict(item.split("=", 1) for item in args.env),
        }
        cmd = [str(args.cli), "-p", args.prompt, "--model", args.model]
        cmd += ["--output-format", args.output_format]
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
                if r["path"] == "/v1/messages" and isinstance(r["body"], dict)
            ]
            if bodies:
                clean = sanitize(bodies[0], home)
                text = json.dumps(clean, indent=1, ensure_ascii=False) + "\n"
                args.fixture.write_text(text, encoding="utf-8")
    httpd.shutdown()
    result = {
        "command": cmd,
        "env": {k: v for k, v in env.items() if k not in ("PATH", "HOME")},
        "exit_status": rc,
        "stdout": stdout.decode(errors="replace"),
        "stderr": stderr.decode(errors="replace"),
        "requests": [
            f"{r['method']} {r['path']}{'?' + r['query'] if r['query'] else ''} "
            f"({r['body_bytes']} bytes)"
            for r in recorder.records
        ],
    }
    (args.out / "claude.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
