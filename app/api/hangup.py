"""Noticing a client that hangs up while the gateway works for it.

uvicorn speaks ASGI 2.3, whose `send` stays silent once the client is gone, so the only sign is
`http.disconnect` on `receive`. Starlette's StreamingResponse watches for it with an anyio task
group (two tasks and their cancel scopes: about a tenth of a routed stream's CPU here).
`HangUpWatch` is one plain task: on a disconnect it cancels the task that entered it, and it
ends that cancellation at its exit, where `gone` says what happened. A streamed answer stops
reading the upstream there (app/api/event_stream.py); a wait for the upstream's answer stops
there too (app/api/openai.py), so a client that timed out does not leave the gateway waiting,
retrying and falling back on its behalf: the upstream connection closes, and a server such as
vLLM or llama.cpp stops generating.

The watching task costs about 5% of a routed request's instructions against a fast upstream
(`benchmarks.instructions`), and is worth it only when the wait is long: `after_s` starts it
only once the block has run that long (a timer, a fraction of the task's cost, when it has not).
"""
from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive


class HangUpWatch:
    """`async with HangUpWatch(receive) as watch:` the block is cancelled if the client hangs up
    (once it has run `after_s`); `watch.gone` says so after it. Enter it only once the request
    body has been read."""

    __slots__ = ("receive", "after_s", "gone", "_task", "_timer", "_watcher")

    def __init__(self, receive: Receive, after_s: float = 0.0) -> None:
        self.receive = receive
        self.after_s = after_s
        self.gone = False

    async def __aenter__(self) -> HangUpWatch:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._watcher: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        if self.after_s > 0:
            self._timer = asyncio.get_running_loop().call_later(self.after_s, self._start)
        else:
            self._start()
        return self

    def _start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if kind is asyncio.CancelledError and self.gone:
            self._task.uncancel()  # this watch's own cancellation ends here, nothing above it
            return True
        return False
