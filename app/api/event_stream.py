"""The streamed answer's response: Starlette's StreamingResponse, with a cheaper watch for the
client hanging up (app/api/hangup.py). On a disconnect the sending stops, which stops reading the
upstream and settles the bill as before (app/api/openai.py)."""
from __future__ import annotations

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.hangup import HangUpWatch


class EventStream(StreamingResponse):
    """A StreamingResponse whose client-disconnect watch is one asyncio task."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with HangUpWatch(receive):
            await self.stream_response(send)
        if self.background is not None:
            await self.background()
