"""The admin API under /admin: register, profile, inspect, change and remove LLMs.

Behind the admin key (`Authorization: Bearer <admin key>`); off when no admin key is set.
A model's API key never appears here: records hold only the NAME of its environment variable.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.auth import require_admin_key
from app.api.errors import APIError
from app.costs.budget import key_scope
from app.runtime.config import PriceIn
from app.runtime.gateway import Gateway, gateway_of
from models_registry.base import RegistryUnavailable
from models_registry.records import JobRecord, ModelRecord
from router_core.pricing import InvalidField

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin_key)])

class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    base_url: str
    upstream_model: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    cost: PriceIn
    scores: dict[str, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] | None = None

    @field_validator("scores")
    @classmethod
    def _non_empty(cls, v: dict | None) -> dict | None:
        if v is not None and not v:
            raise ValueError("scores must hold at least one prompt's score")
        return v


class PatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cost: PriceIn | None = None
    enabled: bool | None = None


def model_json(record: ModelRecord, detail: bool = False) -> dict:
    """A model record for the admin API (never a key's value: records hold none)."""
    out = {
        "name": record.name, "base_url": record.base_url, "upstream_model": record.upstream_model,
        "api_key_env": record.api_key_env, "cost": record.cost.to_dict(), "state": record.state,
        "enabled": record.enabled, "error": record.error, "profiled_at": record.profiled_at,
        "spend": record.spend, "created_at": record.created_at, "updated_at": record.updated_at,
    }
    p = record.profile
    if p is not None:
        out["accuracy"] = p.accuracy
        out["profile"] = {
            "accuracy": p.accuracy, "n_prompts": p.n_prompts, "avg_output_tokens": p.avg_output_tokens,
            "repset_version": p.repset_version, "state_version": p.state_version,
        }
        if detail:
            out["profile"]["clusters"] = [
                {"cluster": k, "error": e, "count": c} for k, (e, c) in enumerate(zip(p.errors, p.counts))
            ]
    else:
        out["profile"] = None
    return out


def job_json(job: JobRecord) -> dict:
    return {"id": job.id, "model": job.model, "state": job.state, "done": job.done, "total": job.total,
            "errors": job.errors, "spend": job.spend, "eta_s": job.eta_s, "error": job.error,
            "started_at": job.started_at, "updated_at": job.updated_at}


async def writing(coro):
    """Run a registry write; a registry that is away answers 503, never 500."""
    try:
        return await coro
    except RegistryUnavailable as exc:
        raise APIError(503, f"the registry is unavailable, try again: {exc}", code="registry_unavailable") from None


def existing(gw: Gateway, name: str) -> ModelRecord:
    record = gw.registry.snapshot().get(name)
    if record is None:
        raise APIError(404, f"no registered model {name!r}", param="name", code="model_not_found")
    return record


@router.post("/models", status_code=202)
async def register_model(body: RegisterIn, request: Request) -> JSONResponse:
    """Register a model and profile it (or take precomputed `scores`); 202 with the job."""
    gw = gateway_of(request)
    gw.routing.require_ready()
    if body.name in gw.registry.snapshot():
        raise APIError(409, f"a model named {body.name!r} is registered already", param="name",
                       code="model_exists")
    if body.name == "uniroute" or body.name.startswith("uniroute:"):
        raise APIError(400, "model names starting with 'uniroute' are reserved for routing", param="name")
    try:
        record = ModelRecord.new(name=body.name, base_url=body.base_url,
                                 upstream_model=body.upstream_model or body.name,
                                 api_key_env=body.api_key_env, cost=body.cost.to_price())
    except InvalidField as exc:
        raise APIError(400, str(exc), param=exc.field, code="invalid_value") from None
    try:
        job_id = await writing(gw.register(record, body.scores))
    except ValueError as exc:  # scores that do not fit the representative set
        raise APIError(400, str(exc), param="scores", code="unknown_prompt_ids") from None
    return JSONResponse({"job_id": job_id, "model": record.name}, status_code=202)


@router.get("/models")
async def list_models(request: Request) -> dict:
    records = sorted(gateway_of(request).registry.snapshot().values(), key=lambda r: r.name)
    return {"data": [model_json(r) for r in records]}


@router.get("/models/{name:path}")
async def show_model(name: str, request: Request) -> dict:
    gw = gateway_of(request)
    out = model_json(existing(gw, name), detail=True)
    jobs = [j for j in await writing(gw.registry.list_jobs(name))]
    out["jobs"] = [job_json(j) for j in sorted(jobs, key=lambda j: j.started_at)]
    return out


@router.patch("/models/{name:path}")
async def patch_model(name: str, body: PatchIn, request: Request) -> dict:
    gw = gateway_of(request)
    record = existing(gw, name)
    if body.cost is not None:
        record.cost = body.cost.to_price()
    if body.enabled is not None:
        record.enabled = body.enabled
        if record.state in ("ready", "disabled"):
            record.state = "ready" if body.enabled else "disabled"
    await writing(gw.registry.put_model(record))
    return model_json(record, detail=True)


@router.delete("/models/{name:path}")
async def delete_model(name: str, request: Request) -> dict:
    gw = gateway_of(request)
    existing(gw, name)
    for job in await writing(gw.registry.list_jobs(name)):
        if job.state == "running":
            await gw.jobs.cancel(job.id)
    await writing(gw.registry.delete_model(name))
    await writing(gw.registry.clear_answers(name))
    return {"deleted": name}


@router.post("/models/{name:path}/reprofile", status_code=202)
async def reprofile_model(name: str, request: Request) -> JSONResponse:
    """Ask the representative prompts again from scratch."""
    gw = gateway_of(request)
    gw.routing.require_ready()
    record = existing(gw, name)
    for job in await writing(gw.registry.list_jobs(name)):
        if job.state == "running":
            raise APIError(409, f"model {name!r} is being profiled by job {job.id}", code="job_running")
    await writing(gw.registry.clear_answers(name))
    job = await writing(gw.jobs.start(record))
    return JSONResponse({"job_id": job.id, "model": name}, status_code=202)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> dict:
    job = await writing(gateway_of(request).registry.get_job(job_id))
    if job is None:
        raise APIError(404, f"no job {job_id!r}", param="id", code="job_not_found")
    return job_json(job)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request) -> dict:
    return job_json(await writing(gateway_of(request).jobs.cancel(job_id)))


@router.get("/calibration")
async def calibration(request: Request, models: str | None = None) -> dict:
    """The λ curve of the routable models (or of `models`, comma-separated) on the representative
    set: per point the λ range, expected score and cost per request, and traffic shares."""
    table = gateway_of(request).routing.require_ready().table
    allowed = None
    if models is not None:
        allowed = frozenset(m.strip() for m in models.split(",") if m.strip())
        if not allowed:
            raise APIError(400, "models must name at least one model (comma-separated)", param="models",
                           code="invalid_models")
        unknown = sorted(allowed - set(table.names))
        if unknown:
            raise APIError(400, f"models names models that are not routable: {', '.join(unknown)}",
                           param="models", code="model_not_found")
    curve = table.calibration(allowed)
    if curve is None:
        raise APIError(503, "no routable model: register and profile a model first", code="no_routable_model")
    return curve.to_dict()


@router.get("/budget")
async def budget(request: Request) -> dict:
    """The budget guard: per scope (a client key's fingerprint, or `all`), this window's spend,
    its target and the λ floor the guard sets now."""
    gw = gateway_of(request)
    guard = gw.budget
    if guard is None:
        return {"enabled": False, "target": None, "window_s": None, "scopes": []}
    scopes = [key_scope(k) for k in gw.settings.api_keys] or [key_scope(None)]
    curve = gw.router.calibration() if gw.router is not None else None
    states = [await guard.state(scope, curve) for scope in scopes]
    return {"enabled": True, "target": guard.target, "window_s": guard.window_s,
            "scopes": [s.to_dict() for s in states]}


@router.get("/drift")
async def drift(request: Request) -> dict:
    """Share of the recent routed prompts far from every cluster (threshold learned on the
    training prompts): when it grows well above `expected_share`, re-cluster."""
    router_ = gateway_of(request).router
    if router_ is None or router_.drift is None:
        return {"enabled": False, "reason": "the router state records no drift threshold (rebuild it with "
                                            "`uniroute build-state`)" if router_ is not None else "not ready"}
    return {"enabled": True, **router_.drift.snapshot()}
