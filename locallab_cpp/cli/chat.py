"""``python -m locallab_cpp chat [MODEL]``: a chat in the terminal.

It talks to a running server (``--url``; by default the one the settings' host and port
name) or, with ``--embedded``, to a server it starts itself (chat_embedded.py), through the
OpenAI chat API (chat_client.py). Answers stream as they are generated, reasoning faint and
apart, with one line of token figures after each. Ctrl-C stops an answer (the connection
closes, so the server ends the generation and frees its slot) and returns to the prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from locallab_cpp.cli.chat_client import ChatClient, ChatError, Finish, ModelInfo, Piece, Usage
from locallab_cpp.cli.chat_session import Conversation, Figures, Message, Style

PROMPT = ">>> "
HISTORY_LENGTH = 1000

HELP = """\
/model [NAME]   show the model and list the chat models; with NAME, switch to it
/system [TEXT]  show the system prompt; with TEXT, set it (`/system -` removes it)
/clear          forget the conversation (the system prompt stays)
/save FILE      write the conversation as JSON, or as Markdown if FILE ends in .md
/help           this list
/exit           quit (Ctrl-D too)
Ctrl-C stops an answer and returns to the prompt."""

COMMANDS = ("model", "system", "clear", "save", "help", "exit", "quit")


@dataclass(frozen=True)
class Command:
    """A line starting with ``/``: the command's name and the rest of the line."""

    name: str
    arg: str


def parse_command(line: str) -> Command | None:
    """The command a line holds, None for a message to the model.

    ``/save  a b.json`` gives ``Command("save", "a b.json")``; names are case-insensitive.
    """
    text = line.strip()
    if not text.startswith("/"):
        return None
    name, _, arg = text[1:].partition(" ")
    return Command(name.lower(), arg.strip())


@dataclass
class Options:
    """What each request carries besides the messages."""

    temperature: float | None = None
    max_tokens: int | None = None


class ChatRepl:
    """The loop: read a line, run a command or stream the model's answer."""

    def __init__(
        self,
        client: ChatClient,
        model: str | None,
        conversation: Conversation,
        options: Options,
        out: TextIO,
        style: Style,
    ) -> None:
        self.client = client
        self.model = model
        self.conversation = conversation
        self.options = options
        self.out = out
        self.style = style

    def say(self, text: str) -> None:
        """One line of the chat's own (not the model's)."""
        print(text, file=self.out, flush=True)

    def fail(self, text: str) -> None:
        """One line saying what went wrong."""
        print(self.style.error(f"error: {text}"), file=self.out, flush=True)

    def run(self, read: Callable[[str], str] = input) -> int:
        """Read lines until /exit or end of input; returns the exit status."""
        while True:
            try:
                line = read(PROMPT)
            except EOFError:
                self.say("")
                return 0
            except KeyboardInterrupt:
                self.say("\n(Ctrl-C stops an answer; /exit or Ctrl-D quits.)")
                continue
            if not self.handle(line):
                return 0

    def handle(self, line: str) -> bool:
        """Act on one line; False once the chat should end."""
        command = parse_command(line)
        if command is None:
            if line.strip():
                self.ask(line.strip())
            return True
        name, arg = command.name, command.arg
        if name in ("exit", "quit"):
            return False
        if name == "help":
            self.say(HELP)
        elif name == "clear":
            self.conversation.clear()
            self.say("(conversation cleared)")
        elif name == "system":
            self._system(arg)
        elif name == "model":
            self._model(arg)
        elif name == "save":
            self._save(arg)
        else:
            self.fail(f"unknown command /{name}; /help lists the commands.")
        return True

    def _system(self, arg: str) -> None:
        if not arg:
            shown = self.conversation.system or "(none)"
            self.say(f"system prompt: {shown}")
        elif arg == "-":
            self.conversation.system = ""
            self.say("(system prompt removed)")
        else:
            self.conversation.system = arg
            self.say("(system prompt set)")

    def _model(self, arg: str) -> None:
        try:
            models = self.client.models()
        except ChatError as exc:
            self.fail(exc.message)
            return
        if not arg:
            self.say(f"model: {self.model or '(the server default)'}")
            for info in models:
                mark = "*" if info.id == self.model else " "
                context = f"{info.context_length} tokens" if info.context_length else "?"
                loaded = ", loaded" if info.loaded else ""
                self.say(f" {mark} {info.id}  (context {context}{loaded})")
            return
        if arg not in {info.id for info in models}:
            self.fail(f"no chat model {arg!r} on the server; /model lists them.")
            return
        self.model = arg
        self.say(f"(model: {arg}; the conversation goes on with it)")

    def _save(self, arg: str) -> None:
        if not arg:
            self.fail("/save needs a file name: /save chat.json or /save chat.md")
            return
        path = Path(arg).expanduser()
        try:
            written = self.conversation.save(path, self.model)
        except OSError as exc:
            self.fail(f"cannot write {path}: {exc.strerror or exc}")
            return
        turns = len(self.conversation.messages)
        self.say(f"(saved {turns} message{'' if turns == 1 else 's'} as {written} to {path})")

    def ask(self, text: str) -> None:
        """Send ``text``, stream the answer, then print its figures. After Ctrl-C the
        partial answer stays in the conversation; after an error the question is dropped."""
        messages = self.conversation.messages
        messages.append(Message("user", text))
        figures = Figures(started=time.monotonic())
        answer: list[str] = []
        reasoning: list[str] = []
        finish: str | None = None
        events = self.client.stream_chat(
            self.conversation.request_messages(),
            model=self.model,
            temperature=self.options.temperature,
            max_tokens=self.options.max_tokens,
        )
        try:
            finish = self._stream(events, figures, answer, reasoning)
        except KeyboardInterrupt:
            events.close()  # closes the connection: the server stops generating
            self.out.write(self.style.reset() + "\n")
            if answer or reasoning:
                messages.append(Message("assistant", "".join(answer), "".join(reasoning)))
            else:
                messages.pop()
            self.say(self.style.dim(f"[stopped] {figures.line()}"))
            return
        except ChatError as exc:
            self.out.write("\n" if figures.pieces else "")
            messages.pop()
            self.fail(exc.message)
            return
        finally:
            events.close()
        messages.append(Message("assistant", "".join(answer), "".join(reasoning)))
        note = " · cut at --max-tokens" if finish == "length" else ""
        self.out.write("\n")
        self.say(self.style.dim(f"[{figures.line()}{note}]"))

    def _stream(
        self,
        events: Iterator[object],
        figures: Figures,
        answer: list[str],
        reasoning: list[str],
    ) -> str | None:
        finish: str | None = None
        thinking = False
        for event in events:
            if isinstance(event, Piece):
                now = time.monotonic()
                if figures.first_token is None:
                    figures.first_token = now
                figures.ended = now
                figures.pieces += 1
                if event.kind == "reasoning":
                    if not thinking:
                        self.out.write(self.style.dim("thinking: "))
                        thinking = True
                    reasoning.append(event.text)
                    self.out.write(self.style.dim(event.text))
                else:
                    if thinking:
                        self.out.write("\n\n")
                        thinking = False
                    answer.append(event.text)
                    self.out.write(event.text)
                self.out.flush()
            elif isinstance(event, Usage):
                figures.prompt_tokens = event.prompt_tokens
                figures.completion_tokens = event.completion_tokens
                figures.cached_tokens = event.cached_tokens
            elif isinstance(event, Finish):
                finish = event.reason
        return finish


# --------------------------------------------------------------------------- start-up


def history_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the prompt history is kept: the user's state directory (XDG_STATE_HOME, else
    ~/.local/state; LOCALAPPDATA on Windows)."""
    env = os.environ if env is None else env
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        base = Path(env["LOCALAPPDATA"])
    else:
        base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "locallab_cpp" / "chat_history"


@contextlib.contextmanager
def line_history(path: Path) -> Iterator[None]:
    """Arrow-key editing and a history kept in ``path``, where Python has readline (not
    every platform does: then lines are read plainly)."""
    try:
        import readline
    except ImportError:
        yield
        return
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)


def default_url(host: str, port: int) -> str:
    """The URL of a server listening on ``host:port``: a wildcard address is reached on
    loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def pick_model(models: list[ModelInfo], wanted: str | None) -> str | None:
    """The model to chat with: ``wanted`` if the server has it (else ChatError), otherwise
    the first loaded chat model, else the first chat model."""
    ids = [m.id for m in models]
    if wanted is not None:
        if wanted not in ids:
            shown = ", ".join(ids) or "none"
            raise ChatError(f"the server has no chat model {wanted!r} (its chat models: {shown})")
        return wanted
    if not models:
        raise ChatError("the server offers no chat model.")
    loaded = [m.id for m in models if m.loaded]
    return (loaded or ids)[0]


def _end_on_signal(signum: int, _frame: object) -> None:
    # SIGTERM or a closed terminal: end through the finally blocks, which stop the embedded
    # server instead of leaving it running in its own session.
    raise SystemExit(128 + signum)


def run_chat(args: argparse.Namespace, url: str) -> int:
    """Run the chat the parsed ``args`` describe against ``url`` (unless ``--embedded``);
    returns the exit status."""
    from locallab_cpp.cli.chat_embedded import EmbeddedServer

    out = sys.stdout
    style = Style(out)
    api_key = args.api_key or os.environ.get("LOCALLAB_API_KEY", "").split(",")[0].strip()
    server: EmbeddedServer | None = None
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _end_on_signal)
    # Ctrl-C raises KeyboardInterrupt (which stops an answer) even when this process was
    # started with SIGINT ignored, as a shell does for a background job's children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.embedded:
            flags = []
            if args.n_ctx is not None:
                flags += ["--n-ctx", str(args.n_ctx)]
            if args.threads is not None:
                flags += ["--threads", str(args.threads)]
            server = EmbeddedServer(args.model, flags)
            print("starting the embedded server...", file=sys.stderr, flush=True)
            server.start()
            url = server.url
        with ChatClient(url, api_key or None) as client:
            models = client.models()
            model = pick_model(models, args.model)
            context = next((m.context_length for m in models if m.id == model), None)
            shown = f" (context {context} tokens)" if context else ""
            print(f"chat with {model} at {url}{shown}; /help lists the commands.", file=out)
            conversation = Conversation(system=args.system or "")
            options = Options(temperature=args.temperature, max_tokens=args.max_tokens)
            repl = ChatRepl(client, model, conversation, options, out, style)
            with line_history(history_file()):
                return repl.run()
    except ChatError as exc:
        print(style.error(f"error: {exc.message}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
