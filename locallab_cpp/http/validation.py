"""Strict request-body validation, run before Litestar parses the body.

Litestar converts bodies leniently (``"0.5"`` becomes 0.5, ``1`` becomes true) and reports
an out-of-range number without its field. The reference wants wrong types refused with a
400 that names the field, so every JSON body is first decoded strictly against the
handler's own ``data`` type. The ``data`` parameters stay, and with them the OpenAPI schema.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request

from locallab_cpp.errors import InvalidRequest, describe_msgspec_error


async def validate_body_strictly(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: raise InvalidRequest unless the body matches ``data``."""
    field = request.route_handler.parsed_data_field
    if field is None:
        return
    body = await request.body()  # Litestar caches it for the handler and enforces the size cap
    try:
        msgspec.json.decode(body, type=field.annotation)
    except msgspec.ValidationError as exc:
        raise InvalidRequest("Invalid request: " + describe_msgspec_error(str(exc))) from None
    except UnicodeDecodeError:
        raise InvalidRequest("JSON is malformed: the body is not valid UTF-8") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(_malformed_detail(body, str(exc))) from None
    except RecursionError:  # msgspec decodes nested values by recursion (Python's limit)
        raise InvalidRequest(
            "JSON is malformed: the body nests arrays and objects too deeply to decode."
        ) from None


_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")
_KEY_BEFORE = re.compile(rb'"([^"\\]{1,64})"\s*:\s*$')
_NON_FINITE = (b"NaN", b"Infinity", b"-Infinity")


def _malformed_detail(body: bytes, message: str) -> str:
    reason = message.removeprefix("JSON is malformed: ")
    match = _BYTE_OFFSET.search(reason)
    if match:
        offset = int(match.group(1))
        if body[offset - 1 : offset] == b"-":  # msgspec points past the sign of -Infinity
            offset -= 1
        # JSON has no NaN or Infinity; clients that send them meant a number for a field.
        if body[offset:].startswith(_NON_FINITE):
            key = _KEY_BEFORE.search(body[max(0, offset - 80) : offset])
            if key:
                name = key.group(1).decode("utf-8", errors="replace")
                return f"Invalid request: '{name}': NaN and Infinity are not valid numbers"
    return f"JSON is malformed: {reason}"
