"""A child process for the schema fuzz test (test_schema_fuzz.py): reads JSON schemas, one
a line, converts each and lets llama.cpp's parser check the grammar, and answers one line
each: "ok", or "invalid" and the message. A crash ends the process, which the test sees
instead of dying itself."""

from __future__ import annotations

import json
import sys

from locallab_cpp.engine.schema import checked_grammar, grammar_for_json_schema
from locallab_cpp.errors import InvalidRequest


def main() -> None:
    for line in sys.stdin:
        try:
            checked_grammar(grammar_for_json_schema(json.loads(line)))
            answer = {"result": "ok"}
        except InvalidRequest as exc:
            answer = {"result": "invalid", "message": str(exc)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
