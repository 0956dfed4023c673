"""The streamed answer's response: Starlette's StreamingResponse, with a cheaper watch for the
client hanging up.

uvicorn speaks ASGI 2.3, whose `send` stays silent once the client is gone, so a stream must
watch `receive` for `http.disconnect` beside sending. Starlette does that with an anyio task
group for every stream (two tasks and their cancel scopes: about a tenth of a routed stream's
CPU here). One plain task does the same: on a disconnect it cancels the sending task, which
stops reading the upstream and settles the bill as before (app/api/openai.py).
"""
from __future__ import annotations

import asyncio

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStream(StreamingResponse):
    """A StreamingResponse whose client-disconnect watch is one asyncio task."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sending = asyncio.current_task()
        assert sending is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            sending.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone:
                raise
            sending.uncancel()  # this watch's own cancellation ends the stream, nothing above it
        finally:
            watcher.cancel()
        if self.background is not None:
            await self.background()
