"""The admin API of the router's state and of captured traffic, under /admin (admin key).

- `GET /admin/state`: the active state, its clusters (label, size, representative items and
  their graders, examples, below the coverage floor or not) and the pending migration.
- `POST /admin/state {"state_dir", "repset_path"[, "spend_cap", "auto_commit"]}`: 202, starts a
  migration (app/runtime/migration.py); `POST /admin/state/pending/commit {"force"}`;
  `DELETE /admin/state/pending`.
- `GET /admin/state/graded?format=jsonl`: the pending set's (else the active set's) prompts with
  every model's stored grades and costs, the canonical routing JSONL that
  `uniroute eval --compare-states` reads to say what a switch buys before it is made.
- `GET /admin/capture?format=jsonl`: the captured routing texts as canonical `{"id","prompt"}`
  JSONL rows, streamed oldest first; `GET /admin/capture/stats`; `DELETE /admin/capture`.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.admin import writing
from app.api.auth import require_admin_key
from app.runtime.gateway import Gateway, gateway_of
from app.runtime.state_view import clusters_view, repset_examples, state_fields
from router_core.repset import load_repset
from router_core.router import UniRouter

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin_key)])


async def capture_rows(gw: Gateway) -> AsyncIterator[bytes]:
    """The captured prompts as canonical JSONL, one batch of lines at a time."""
    async for batch in gw.capture_store.batches():
        yield b"".join(orjson.dumps({"id": item.id, "prompt": item.prompt}) + b"\n" for item in batch)


@router.get("/capture")
async def export_capture(request: Request, format: Literal["jsonl"] = "jsonl") -> StreamingResponse:
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


class ApplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state_dir: str = Field(min_length=1)
    repset_path: str = Field(min_length=1)
    spend_cap: float | None = Field(None, gt=0, allow_inf_nan=False)
    auto_commit: bool = True


class CommitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = False


# Examples drawn from the representative set, per (state, set) version: embedding the set is slow.
_examples: dict[tuple[str, str], list[list[str]]] = {}


async def examples(gw: Gateway, router: UniRouter) -> list[list[str]] | None:
    """The representative items nearest each centroid, unless the state's metadata gives every
    cluster examples of its own."""
    meta = router.state.metadata.get("clusters")
    if isinstance(meta, list) and len(meta) == router.n_clusters and all(
            isinstance(c, dict) and c.get("examples") for c in meta):
        return None
    assert router.repset is not None
    key = (router.state.version, router.repset.repset.version)
    if key not in _examples:
        _examples[key] = await asyncio.get_running_loop().run_in_executor(gw.embed_pool, repset_examples, router)
    return _examples[key]


def pending_view(doc: dict | None) -> dict | None:
    """The pending migration with its overall progress (items graded, and declined by their
    model, of items to grade)."""
    if doc is None:
        return None
    models = doc.get("models", {})
    return {**doc, "progress": {"done": sum(m.get("done", 0) for m in models.values()),
                                "declined": sum(m.get("declined", 0) for m in models.values()),
                                "total": sum(m.get("total", 0) for m in models.values()),
                                "ready_models": sum(m.get("state") == "ready" for m in models.values()),
                                "models": len(models)}}


@router.get("/state")
async def show_state(request: Request) -> dict:
    """The active router state, its clusters, and the pending migration (null when none)."""
    gw = gateway_of(request)
    active = gw.routing.require_ready()
    floor = gw.settings.coverage_floor
    return {"state": state_fields(active), "coverage_floor": floor,
            "clusters": clusters_view(active, floor, await examples(gw, active)),
            "pending": pending_view(await writing(gw.states.pending()))}


@router.post("/state", status_code=202)
async def apply_state(body: ApplyIn, request: Request) -> JSONResponse:
    """Start switching to another state and representative set: 202 with the pending migration."""
    doc = await writing(gateway_of(request).states.apply(body.state_dir, body.repset_path, body.spend_cap,
                                                         body.auto_commit))
    return JSONResponse(pending_view(doc), status_code=202)


@router.post("/state/pending/commit")
async def commit_state(body: CommitIn, request: Request) -> dict:
    """Switch every replica to the pending state now (`force`: even if some model is not ready)."""
    active = await writing(gateway_of(request).states.commit(body.force))
    return {key: value for key, value in active.items() if key != "profiles"}


@router.delete("/state/pending")
async def abandon_state(request: Request) -> dict:
    """Abandon the pending migration; traffic stays on the active state."""
    return {"abandoned": (await writing(gateway_of(request).states.abandon()))["id"]}


@router.get("/state/graded")
async def export_graded(request: Request, format: Literal["jsonl"] = "jsonl",
                        set: Literal["pending", "active"] = "pending") -> Response:
    """The representative prompts of the pending migration's set (the active set's when none is
    pending, or with `set=active`) with every registered model's stored grade and cost on each,
    as canonical routing JSONL `{"id", "prompt", "scores", "costs"}` lines (ungraded answers left
    out)."""
    gw = gateway_of(request)
    doc = await writing(gw.states.pending()) if set == "pending" else None
    if doc is not None:
        repset = await asyncio.to_thread(load_repset, doc["repset_path"])
    else:
        clusters = gw.routing.require_ready().repset
        assert clusters is not None  # the gateway always loads a representative set
        repset = clusters.repset
    graded = {name: await writing(gw.registry.answers(name, repset.version)) for name in gw.registry.snapshot()}
    lines = []
    for item in repset.items:
        answers = {name: by_id[item.id] for name, by_id in graded.items()
                   if item.id in by_id and by_id[item.id].error is None and not by_id[item.id].declined}
        lines.append(orjson.dumps({"id": item.id, "prompt": item.prompt,
                                   "scores": {name: a.score for name, a in answers.items()},
                                   "costs": {name: a.cost for name, a in answers.items()}}) + b"\n")
    return Response(b"".join(lines), media_type="application/x-ndjson",
                    headers={"content-disposition": "attachment; filename=graded.jsonl"})
