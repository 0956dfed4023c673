"""The admin API of the router's state and of captured traffic, under /admin (admin key).

- `GET /admin/capture?format=jsonl`: the captured routing texts as canonical `{"id","prompt"}`
  JSONL rows, streamed oldest first; `GET /admin/capture/stats`; `DELETE /admin/capture`.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from app.api.admin import writing
from app.api.auth import require_admin_key
from app.runtime.gateway import Gateway, gateway_of

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin_key)])


async def capture_rows(gw: Gateway) -> AsyncIterator[bytes]:
    """The captured prompts as canonical JSONL, one batch of lines at a time."""
    async for batch in gw.capture_store.batches():
        yield b"".join(orjson.dumps({"id": item.id, "prompt": item.prompt}) + b"\n" for item in batch)


@router.get("/capture")
async def export_capture(request: Request, format: Literal["jsonl"] = "jsonl") -> StreamingResponse:  # noqa: A002
    """Every captured prompt as `{"id", "prompt"}` lines (the canonical dataset format)."""
    gw = gateway_of(request)
    await gw.capture.flush()
    await writing(gw.capture_store.stats())  # a store that is away answers 503 before the stream starts
    return StreamingResponse(capture_rows(gw), media_type="application/x-ndjson",
                             headers={"content-disposition": "attachment; filename=capture.jsonl"})


@router.get("/capture/stats")
async def capture_stats(request: Request) -> dict:
    """Whether capture is on, its settings, and what is kept: count, time span, per cluster."""
    gw = gateway_of(request)
    await gw.capture.flush()
    stats = await writing(gw.capture_store.stats())
    return {"enabled": gw.capture.enabled, **gw.settings.capture.model_dump(), **stats.to_dict()}


@router.delete("/capture")
async def clear_capture(request: Request) -> dict:
    """Forget every captured prompt."""
    gw = gateway_of(request)
    await gw.capture.flush()
    return {"deleted": await writing(gw.capture_store.clear())}
