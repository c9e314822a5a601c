"""The text of one generation as it is produced, for every API's streaming responses."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from locallab_cpp.engine.types import GenerationHandle, TextChunk
from locallab_cpp.errors import LocalLabError

logger = logging.getLogger("locallab_cpp")

INTERNAL_STREAM_DETAIL = "Internal server error; see the server log."


async def text_chunks(handle: GenerationHandle) -> AsyncGenerator[str, None]:
    """Each non-empty chunk of text of ``handle``'s generation.

    An error ends the iteration as a LocalLabError, an unexpected one logged and replaced
    by a detail without internals, so an API can always close its stream properly.
    Closing this iterator early (the client went away) cancels the generation.
    """
    try:
        async for event in handle.events():
            if isinstance(event, TextChunk) and event.text:
                yield event.text
    except LocalLabError:
        raise
    except Exception as exc:
        # "stream failed" is what the end-to-end suite looks for in the server log.
        logger.exception("stream failed")
        raise LocalLabError(INTERNAL_STREAM_DETAIL) from exc
    finally:
        handle.cancel()  # a no-op once the generation has finished
