"""`python -m locallab_cpp chat`: its commands, the SSE parsing, the saved forms, the figures
line, over fake transports and over the app with the fake engine."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from locallab_cpp.cli import build_parser
from locallab_cpp.cli.chat import (
    ChatRepl,
    Command,
    Options,
    default_url,
    history_file,
    parse_command,
    pick_model,
)
from locallab_cpp.cli.chat_client import (
    START_HINT,
    ChatClient,
    ChatError,
    Finish,
    ModelInfo,
    Piece,
    Usage,
    chat_events,
    error_message,
    sse_data,
)
from locallab_cpp.cli.chat_session import Conversation, Figures, Message, Style

BASE = "http://chat.test"
MODELS = {
    "object": "list",
    "data": [
        {"id": "alpha", "context_length": 4096, "loaded": True, "meta": {"kind": "chat"}},
        {"id": "embedder", "context_length": 512, "loaded": False, "meta": {"kind": "embedding"}},
        {"id": "beta", "context_length": 2048, "loaded": False, "meta": {"kind": "chat"}},
    ],
}


def sse(*payloads: object) -> bytes:
    """An SSE body: one event per payload (JSON unless a str), then ``[DONE]``."""
    events = [p if isinstance(p, str) else json.dumps(p) for p in payloads]
    return b"".join(f"data: {e}\n\n".encode() for e in [*events, "[DONE]"])


def chunk(content: str | None = None, reasoning: str | None = None, finish: str | None = None):
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {
    "choices": [],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "total_tokens": 35,
        "prompt_tokens_details": {"cached_tokens": 24},
    },
}


class Server:
    """A fake server: /v1/models and a chat stream; records the requests."""

    def __init__(self, body: bytes | None = None, status: int = 200) -> None:
        self.body = body if body is not None else sse(chunk("Hel"), chunk("lo."), USAGE)
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS)
        if self.status != 200:
            return httpx.Response(self.status, content=self.body)
        return httpx.Response(200, content=self.body, headers={"content-type": "text/event-stream"})

    def last_body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


def repl_for(server: Callable[[httpx.Request], httpx.Response], **options: Any) -> ChatRepl:
    client = ChatClient(BASE, "sekret", transport=httpx.MockTransport(server))
    out = io.StringIO()
    return ChatRepl(client, "alpha", Conversation(), Options(**options), out, Style(out))


def output(repl: ChatRepl) -> str:
    assert isinstance(repl.out, io.StringIO)
    return repl.out.getvalue()


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/exit", Command("exit", "")),
        ("  /SAVE  my chat.json ", Command("save", "my chat.json")),
        ("/system Be brief.  Answer in French.", Command("system", "Be brief.  Answer in French.")),
        ("/model", Command("model", "")),
        ("hello /model", None),
        ("", None),
    ],
)
def test_commands_parse_to_name_and_argument(line: str, expected: Command | None) -> None:
    assert parse_command(line) == expected


def test_sse_data_joins_lines_and_skips_comments_and_unfinished_events() -> None:
    lines = [": keep-alive", "", "event: x", "data: a", "data:b", "", "data: cut off"]
    assert list(sse_data(lines)) == ["a\nb"]


def test_chat_events_of_a_stream_with_reasoning_usage_and_finish() -> None:
    after = f"data: {json.dumps(chunk('x'))}\n\n".encode()
    body = sse(chunk(reasoning="think"), chunk("Hi"), chunk(finish="length"), USAGE) + after
    events = list(chat_events(body.decode().split("\n")))
    assert events == [
        Piece("reasoning", "think"),
        Piece("text", "Hi"),
        Finish("length"),
        Usage(prompt_tokens=30, completion_tokens=5, cached_tokens=24),
    ]  # nothing after [DONE]


def test_an_error_event_mid_stream_raises_its_message() -> None:
    failed = {"error": {"message": "the model  was\nunloaded", "type": "server_error"}}
    lines = sse(chunk("Hi"), failed).decode().split("\n")
    events = chat_events(lines)
    assert next(events) == Piece("text", "Hi")
    with pytest.raises(ChatError, match="server error: the model was unloaded"):
        next(events)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"error": {"message": "Unknown model", "code": 404}}', "server error 404: Unknown model"),
        ('{"detail": "Missing API key"}', "server error 404: Missing API key"),
        ("<html>Not here</html>\nmore", "server error 404: <html>Not here</html>"),
        ("", "server error 404: no details"),
    ],
)
def test_error_message_is_one_line_from_the_json(body: str, expected: str) -> None:
    assert error_message(404, body) == expected


# --------------------------------------------------------------------------- the client


def test_models_lists_only_chat_models() -> None:
    client = ChatClient(BASE, transport=httpx.MockTransport(Server()))
    assert client.models() == [
        ModelInfo("alpha", "chat", 4096, True),
        ModelInfo("beta", "chat", 2048, False),
    ]


def test_a_server_that_is_not_there_says_how_to_start_one() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    client = ChatClient(BASE, transport=httpx.MockTransport(refuse))
    with pytest.raises(ChatError) as caught:
        client.models()
    assert f"no server answers at {BASE}" in caught.value.message
    assert START_HINT in caught.value.message and "--embedded" in START_HINT
    assert "python -m locallab_cpp serve" in START_HINT


def test_the_request_streams_with_usage_and_the_key_as_bearer() -> None:
    server = Server()
    repl = repl_for(server, temperature=0.2, max_tokens=7)
    repl.conversation.system = "Be brief."
    repl.handle("Hi there")
    body = server.last_body()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "alpha" and body["temperature"] == 0.2 and body["max_tokens"] == 7
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]
    assert server.requests[-1].headers["authorization"] == "Bearer sekret"


# --------------------------------------------------------------------------- the loop


def test_an_answer_streams_then_its_figures_and_joins_the_conversation() -> None:
    repl = repl_for(Server())
    repl.handle("Say hello")
    shown = output(repl)
    assert shown.startswith("Hello.\n")
    assert "[5 tokens" in shown and "prompt 30 tokens, 24 cached" in shown
    assert "first token" in shown and "tokens/s" in shown
    assert "\033[" not in shown  # not a terminal: no colours
    assert repl.conversation.messages == [
        Message("user", "Say hello"),
        Message("assistant", "Hello."),
    ]


def test_the_next_request_carries_the_whole_conversation() -> None:
    server = Server()
    repl = repl_for(server)
    repl.handle("one")
    repl.handle("two")
    assert [m["content"] for m in server.last_body()["messages"]] == ["one", "Hello.", "two"]


def test_reasoning_is_shown_apart_and_kept_out_of_the_next_request() -> None:
    server = Server(sse(chunk(reasoning="Let me"), chunk(reasoning=" think."), chunk("42"), USAGE))
    repl = repl_for(server)
    repl.handle("What is it?")
    assert output(repl).startswith("thinking: Let me think.\n\n42\n")
    assert repl.conversation.messages[-1] == Message("assistant", "42", "Let me think.")
    repl.handle("Why?")
    sent = server.last_body()["messages"]
    assert sent[1] == {"role": "assistant", "content": "42"}


def test_a_length_finish_is_said() -> None:
    repl = repl_for(Server(sse(chunk("So"), chunk(finish="length"), USAGE)))
    repl.handle("Go on")
    assert "cut at --max-tokens" in output(repl)


def test_a_server_error_is_one_line_and_the_question_is_dropped() -> None:
    body = b'{"error": {"message": "Prompt has 9000 tokens, more than 4096", "code": 400}}'
    repl = repl_for(Server(body, status=400))
    repl.handle("A long question")
    shown = output(repl)
    assert shown.strip() == "error: server error 400: Prompt has 9000 tokens, more than 4096"
    assert repl.conversation.messages == []


class InterruptedStream(httpx.SyncByteStream):
    """Two chunks, then Ctrl-C (as SIGINT raises it inside the read); records its closing."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b'data: {"choices": [{"delta": {"content": "Once upon"}}]}\n\n'
        yield b'data: {"choices": [{"delta": {"content": " a time"}}]}\n\n'
        raise KeyboardInterrupt

    def close(self) -> None:
        self.closed = True


def test_ctrl_c_stops_the_answer_closes_the_stream_and_keeps_what_came() -> None:
    stream = InterruptedStream()

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS)
        return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})

    repl = repl_for(serve)
    repl.handle("Tell a story")
    assert stream.closed
    shown = output(repl)
    assert shown.startswith("Once upon a time\n[stopped] 2 tokens")
    assert repl.conversation.messages[-1] == Message("assistant", "Once upon a time")
    assert repl.handle("/help")  # the chat goes on


def test_ctrl_c_at_the_prompt_prints_a_hint_and_ctrl_d_ends() -> None:
    replies: list[BaseException | str] = [KeyboardInterrupt(), "/clear", EOFError()]

    def read(prompt: str) -> str:
        assert prompt == ">>> "
        reply = replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    repl = repl_for(Server())
    assert repl.run(read) == 0
    assert "/exit or Ctrl-D quits" in output(repl) and "(conversation cleared)" in output(repl)


def test_exit_ends_the_loop() -> None:
    repl = repl_for(Server())
    lines = iter(["/help", "/exit", "never read"])
    assert repl.run(lambda _prompt: next(lines)) == 0
    assert next(lines) == "never read"
    assert "/save FILE" in output(repl)


def test_system_commands() -> None:
    repl = repl_for(Server())
    repl.handle("/system")
    repl.handle("/system Answer in French.")
    repl.handle("/system")
    repl.handle("/system -")
    assert output(repl).splitlines() == [
        "system prompt: (none)",
        "(system prompt set)",
        "system prompt: Answer in French.",
        "(system prompt removed)",
    ]
    assert repl.conversation.system == ""


def test_clear_forgets_the_turns_but_not_the_system_prompt() -> None:
    repl = repl_for(Server())
    repl.conversation.system = "Be brief."
    repl.handle("hi")
    repl.handle("/clear")
    assert repl.conversation.messages == [] and repl.conversation.system == "Be brief."


def test_model_lists_chat_models_and_switches() -> None:
    repl = repl_for(Server())
    repl.handle("/model")
    lines = output(repl).splitlines()
    assert lines[0] == "model: alpha"
    assert lines[1].startswith(" * alpha") and "4096 tokens, loaded" in lines[1]
    assert lines[2].startswith("   beta") and len(lines) == 3  # no embedding model
    repl.handle("/model embedder")
    assert "no chat model 'embedder'" in output(repl) and repl.model == "alpha"
    repl.handle("/model beta")
    assert repl.model == "beta"


def test_unknown_command_and_save_without_a_file() -> None:
    repl = repl_for(Server())
    repl.handle("/frobnicate")
    repl.handle("/save")
    shown = output(repl).splitlines()
    assert shown[0] == "error: unknown command /frobnicate; /help lists the commands."
    assert shown[1].startswith("error: /save needs a file name")


# --------------------------------------------------------------------------- saved forms


def conversation() -> Conversation:
    return Conversation(
        system="Be brief.",
        messages=[
            Message("user", "What is 6 x 7?"),
            Message("assistant", "42.", reasoning="Six sevens.\nForty-two."),
        ],
    )


def test_save_json_is_a_request_body_with_the_messages(tmp_path: Path) -> None:
    repl = repl_for(Server())
    repl.conversation = conversation()
    repl.handle(f"/save {tmp_path / 'chat.json'}")
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert saved["model"] == "alpha" and saved["saved_at"].endswith("+00:00")
    assert saved["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 6 x 7?"},
        {"role": "assistant", "content": "42.", "reasoning_content": "Six sevens.\nForty-two."},
    ]
    assert "(saved 2 messages as JSON to" in output(repl)


def test_save_markdown_when_the_file_ends_in_md(tmp_path: Path) -> None:
    path = tmp_path / "chat.md"
    assert conversation().save(path, "alpha") == "Markdown"
    assert path.read_text(encoding="utf-8") == (
        "# Chat with alpha\n\n**System prompt:** Be brief.\n\n## You\n\nWhat is 6 x 7?\n\n"
        "## alpha\n\n> Six sevens.\n> Forty-two.\n\n42.\n"
    )


def test_save_to_a_place_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    repl = repl_for(Server())
    repl.handle(f"/save {tmp_path / 'missing' / 'chat.json'}")
    assert output(repl).startswith(f"error: cannot write {tmp_path / 'missing' / 'chat.json'}: ")


# --------------------------------------------------------------------------- figures, style


def test_figures_line() -> None:
    figures = Figures(started=10.0, first_token=10.25, ended=12.25, completion_tokens=21)
    figures.prompt_tokens, figures.cached_tokens = 40, 32
    assert figures.line() == (
        "21 tokens, 10.0 tokens/s · prompt 40 tokens, 32 cached · first token 0.25 s"
    )
    assert Figures(started=1.0).line() == "0 tokens"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colours_only_on_a_terminal_without_no_color() -> None:
    assert Style(Tty(), env={"TERM": "xterm"}).dim("x") == "\033[2mx\033[0m"
    assert Style(Tty(), env={"TERM": "xterm", "NO_COLOR": "1"}).dim("x") == "x"
    assert Style(io.StringIO(), env={"TERM": "xterm"}).dim("x") == "x"


# --------------------------------------------------------------------------- start-up


def test_chat_flags_parse() -> None:
    args = build_parser().parse_args(
        [
            *("chat", "beta", "--url", "http://h:1", "--api-key", "k", "--system", "S"),
            *("--temperature", "0.5", "--max-tokens", "9", "--embedded", "--n-ctx", "512"),
            *("--threads", "2"),
        ]
    )
    assert (args.command, args.model, args.url, args.api_key, args.system) == (
        "chat",
        "beta",
        "http://h:1",
        "k",
        "S",
    )
    assert (args.temperature, args.max_tokens, args.embedded, args.n_ctx, args.threads) == (
        0.5,
        9,
        True,
        512,
        2,
    )
    plain = build_parser().parse_args(["chat"])
    assert plain.model is None and plain.url is None and plain.embedded is False


def test_default_url_and_history_file(tmp_path: Path) -> None:
    assert default_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert default_url("0.0.0.0", 9000) == "http://127.0.0.1:9000"
    assert default_url("::", 8000) == "http://[::1]:8000"
    state = history_file({"XDG_STATE_HOME": str(tmp_path)})
    assert state == tmp_path / "locallab_cpp" / "chat_history"


def test_pick_model() -> None:
    models = [ModelInfo("a", "chat", None, False), ModelInfo("b", "chat", None, True)]
    assert pick_model(models, None) == "b"
    assert pick_model(models[:1], None) == "a"
    assert pick_model(models, "a") == "a"
    with pytest.raises(ChatError, match=r"no chat model 'z' \(its chat models: a, b\)"):
        pick_model(models, "z")


# --------------------------------------------------------------------------- over the app


def test_a_chat_over_the_app_with_the_fake_engine(client: TestClient[Any]) -> None:
    chat = ChatClient(str(client.base_url), http=client)
    models = chat.models()
    assert [m.id for m in models][:1] == ["alpha"] and models[0].loaded
    out = io.StringIO()
    repl = ChatRepl(chat, "alpha", Conversation(), Options(), out, Style(out))
    repl.handle("hello world")
    shown = out.getvalue()
    assert shown.startswith("Echo: ") and "line two end\n" in shown
    assert "[4 tokens" in shown and "prompt " in shown
    assert repl.conversation.messages[-1].content.startswith("Echo: ")
    repl.handle("/model nope")
    assert "no chat model 'nope'" in out.getvalue()
