"""The admin API under /admin: register, profile, inspect, change and remove LLMs.

Behind the admin key (`Authorization: Bearer <admin key>`); off when no admin key is set.
A model's API key never appears here: records hold only the NAME of its environment variable.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.auth import require_admin_key
from app.api.errors import APIError
from app.profiling.jobs import ACTIVE, job_warning
from app.runtime.config import CapabilitiesIn, PriceIn, Settings, is_router_name
from app.runtime.gateway import Gateway, gateway_of
from models_registry.base import RegistryConflict, RegistryUnavailable, update_model
from models_registry.records import JobRecord, JobState, ModelRecord
from router_core.pricing import InvalidField

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin_key)])


# The job's options are stored with it as JSON, which the registry writes with 64-bit integers:
# a larger number was a 500 after the model was written, leaving it `profiling` with no job.
_INT64_MAX = 2**63 - 1


class JobOptionsIn(BaseModel):
    """One profiling job's own options; those left out take the gateway's settings."""

    model_config = ConfigDict(extra="forbid")
    limit: int | None = Field(None, ge=1, le=_INT64_MAX, description="ask only this many prompts, drawn with `seed`")
    seed: int | None = Field(None, ge=-_INT64_MAX - 1, le=_INT64_MAX)
    max_tokens: int | None = Field(None, ge=1, le=_INT64_MAX)
    concurrency: int | None = Field(None, ge=1, le=256)
    spend_cap: float | None = Field(None, gt=0, allow_inf_nan=False)

    def options(self) -> dict:
        return self.model_dump(exclude_none=True)


# The variables that configure the gateway itself (pydantic-settings reads them whatever their
# case; nested fields add `__...`): its admin and client keys, its Redis URL with a password.
_OWN_VARIABLES = {f"UNIROUTE_{name}".upper() for name in Settings.model_fields} | {"UNIROUTE_CONFIG"}


def _not_the_gateways_own(name: str | None) -> str | None:
    """Refuse an `api_key_env` naming a variable of the gateway's own configuration: the model's
    upstream, which the admin chooses, would be sent its value as the key (the client keys, say)."""
    if name is not None and name.upper().split("__")[0] in _OWN_VARIABLES:
        raise ValueError(f"{name} configures the gateway itself; name the variable holding the provider's key")
    return name


def check_key_env(name: str | None, settings: Settings) -> None:
    """Refuse an `api_key_env` that `admin_key_envs` does not allow and no config-file model names:
    the model's upstream, which the admin chooses too, would be sent that variable's value (a
    cloud secret, a database password), so the admin API would read any secret of the host."""
    if name is None or any(fnmatchcase(name, pattern) for pattern in settings.admin_key_envs) or any(
            m.api_key_env == name for m in settings.models):
        return
    allowed = ", ".join(settings.admin_key_envs) or "none"
    raise APIError(400, f"api_key_env {name!r} is not a variable the admin API may name: it allows those matching "
                        f"admin_key_envs ({allowed}) and those the config file's models name; name one of them, "
                        "or widen UNIROUTE_ADMIN_KEY_ENVS", param="api_key_env", code="invalid_value")


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    base_url: str
    upstream_model: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    cost: PriceIn
    capabilities: CapabilitiesIn | None = None
    scores: dict[str, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] | None = None
    job: JobOptionsIn | None = None

    _own_variable = field_validator("api_key_env")(_not_the_gateways_own)

    @field_validator("scores")
    @classmethod
    def _non_empty(cls, v: dict | None) -> dict | None:
        if v is not None and not v:
            raise ValueError("scores must hold at least one prompt's score")
        return v


class PatchIn(BaseModel):
    """What may change on a registered model. Where it is reached (`base_url`, `upstream_model`,
    `api_key_env`: a moved server, a renamed model, a rotated key's variable) keeps its profile:
    the LLM is the same one. `api_key_env: null` drops the key. `capabilities` given are set, the
    others kept."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | None = None
    upstream_model: str | None = None
    api_key_env: str | None = None
    cost: PriceIn | None = None
    capabilities: CapabilitiesIn | None = None
    enabled: bool | None = None

    _own_variable = field_validator("api_key_env")(_not_the_gateways_own)


def model_json(record: ModelRecord, detail: bool = False) -> dict:
    """A model record for the admin API (never a key's value: records hold none)."""
    out = {
        "name": record.name, "base_url": record.base_url, "upstream_model": record.upstream_model,
        "api_key_env": record.api_key_env, "cost": record.cost.to_dict(), "state": record.state,
        "enabled": record.enabled, "error": record.error, "profiled_at": record.profiled_at,
        "spend": record.spend, "created_at": record.created_at, "updated_at": record.updated_at,
        "capabilities": record.capabilities,
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
    """A job for the admin API; `error` holds why it failed, was cancelled or is paused."""
    return {"id": job.id, "model": job.model, "state": job.state, "done": job.done, "total": job.total,
            "declined": job.declined, "errors": job.errors, "spend": job.spend, "eta_s": job.eta_s, "error": job.error,
            "started_at": job.started_at, "updated_at": job.updated_at, "resume_at": job.resume_at,
            "resumes": job.resumes, "reprofile": job.since is not None, "options": job.options,
            "skipped": job.skipped, "truncated": job.truncated, "judge": job.judge,
            "warning": job_warning(job)}


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
    if is_router_name(body.name):
        raise APIError(400, "model names starting with 'uniroute' are reserved for routing", param="name")
    check_key_env(body.api_key_env, gw.settings)
    try:
        record = ModelRecord.new(name=body.name, base_url=body.base_url,
                                 upstream_model=body.upstream_model or body.name,
                                 api_key_env=body.api_key_env, cost=body.cost.to_price(),
                                 capabilities=body.capabilities.declared() if body.capabilities else None)
    except InvalidField as exc:
        raise APIError(400, str(exc), param=exc.field, code="invalid_value") from None
    try:
        job_id = await writing(gw.register(record, body.scores, body.job.options() if body.job else None))
    except ValueError as exc:  # scores that do not fit the representative set
        raise APIError(400, str(exc), param="scores", code="unknown_prompt_ids") from None
    return JSONResponse({"job_id": job_id, "model": record.name}, status_code=202)


@router.get("/models")
async def list_models(request: Request) -> dict:
    records = sorted(gateway_of(request).registry.snapshot().values(), key=lambda r: r.name)
    return {"data": [model_json(r) for r in records]}


AnswerFilter = Literal["all", "wrong", "correct", "ungraded", "declined"]


@router.get("/models/{name:path}/answers")
async def model_answers(name: str, request: Request, filter: AnswerFilter = "all",
                        cluster: int | None = Query(None, ge=0), limit: int = Query(50, ge=1, le=1000),
                        offset: int = Query(0, ge=0)) -> dict:
    """A model's stored answers on the current representative set, in the set's order, to audit
    its grades: the prompt, the reference, the answer's text, its score and the grader's verdict.
    `filter`: `wrong` (graded, score below 0.5), `correct`, `ungraded` (failed or not gradable:
    asked again), `declined` (refused by the model: not asked again, not a failure); `cluster`:
    the prompt's nearest cluster under the current router state."""
    gw = gateway_of(request)
    existing(gw, name)
    clusters = gw.routing.require_ready().repset
    assert clusters is not None  # the gateway always loads a representative set
    stored = await writing(gw.registry.answers(name, clusters.repset.version))
    nearest = np.argmax(clusters.weights, axis=1)
    if cluster is not None and cluster >= clusters.weights.shape[1]:
        raise APIError(400, f"cluster must be below {clusters.weights.shape[1]}", param="cluster",
                       code="invalid_value")
    rows = []
    for item, k in zip(clusters.repset.items, nearest.tolist()):
        a = stored.get(item.id)
        if a is None or (cluster is not None and k != cluster):
            continue
        graded = a.error is None
        kind = ("declined" if a.declined else "ungraded") if not graded else "correct" if a.score >= 0.5 else "wrong"
        if filter not in ("all", kind):
            continue
        rows.append({"prompt_id": item.id, "task": item.task, "grader": item.grader, "cluster": k,
                     "prompt": item.prompt, "reference": item.reference, "answer": a.text, "graded": graded,
                     "score": a.score if graded else None, "verdict": a.verdict, "error": a.error,
                     "declined": a.declined, "truncated": a.truncated, "cost": a.cost, "judge_cost": a.judge_cost, "output_tokens": a.output_tokens,
                     "answered_at": a.answered_at or None})
    return {"model": name, "repset_version": clusters.repset.version, "total": len(rows), "offset": offset,
            "limit": limit, "data": rows[offset:offset + limit]}


@router.get("/models/{name:path}")
async def show_model(name: str, request: Request) -> dict:
    gw = gateway_of(request)
    out = model_json(existing(gw, name), detail=True)
    jobs = [j for j in await writing(gw.registry.list_jobs(name))]
    out["jobs"] = [job_json(j) for j in sorted(jobs, key=lambda j: j.started_at)]
    return out


@router.patch("/models/{name:path}")
async def patch_model(name: str, body: PatchIn, request: Request) -> dict:
    """Change a model as the registry holds it now: read, changed and written back only if no
    other write (another PATCH, a job's progress, another worker or replica) came between, else
    read again, so that no write undoes another nor brings back a model deleted meanwhile."""
    gw = gateway_of(request)
    existing(gw, name)
    if "api_key_env" in body.model_fields_set:
        check_key_env(body.api_key_env, gw.settings)
    config_disabled = any(m.name == name and not m.enabled for m in gw.settings.models)
    try:
        record = await writing(update_model(gw.registry, name, lambda r: _patch(r, body, config_disabled)))
    except RegistryConflict as exc:
        raise APIError(409, f"{exc}; try again", param="name", code="model_busy") from None
    if record is None:
        raise APIError(404, f"no registered model {name!r}", param="name", code="model_not_found")
    return model_json(record, detail=True)


def _patch(record: ModelRecord, body: PatchIn, config_disabled: bool) -> None:
    """Apply a PATCH body to `record`; APIError (nothing to write) for a change it refuses."""
    for field in ("base_url", "upstream_model"):
        if getattr(body, field) is not None:
            setattr(record, field, getattr(body, field))
    if "api_key_env" in body.model_fields_set:
        record.api_key_env = body.api_key_env
    try:
        record.validate()
    except InvalidField as exc:
        raise APIError(400, str(exc), param=exc.field, code="invalid_value") from None
    if body.cost is not None:
        record.cost = body.cost.to_price()
    if body.capabilities is not None:
        record.capabilities = {**record.capabilities, **body.capabilities.declared()}
    if body.enabled and config_disabled:
        # such a model (the judge, say) is only ever called by the gateway, and disabled again at
        # every start: enabled here, it would be served to clients by name until then
        raise APIError(409, f"`{record.name}` is disabled in the config file (a model only the gateway calls); "
                            "change it there", param="enabled", code="disabled_by_config")
    if body.enabled is not None:
        record.enabled = body.enabled
        if not body.enabled and record.state != "profiling":
            record.state = "disabled"
        elif body.enabled and record.state in ("disabled", "failed") and record.profile is not None:
            # back to routing on the profile it has (a failed reprofile left it in place)
            record.state = "ready"


@router.delete("/models/{name:path}")
async def delete_model(name: str, request: Request) -> dict:
    gw = gateway_of(request)
    existing(gw, name)
    for job in await writing(gw.registry.list_jobs(name)):
        if job.state in ACTIVE:
            await gw.jobs.cancel(job.id)
    await writing(gw.registry.delete_model(name))
    await writing(gw.registry.clear_answers(name))
    return {"deleted": name}


@router.post("/models/{name:path}/reprofile", status_code=202)
async def reprofile_model(name: str, request: Request, body: JobOptionsIn | None = None) -> JSONResponse:
    """Ask the representative prompts again (with the job options in the body, if any). The
    stored answers stay and a model with a profile keeps routing on it until the new job has
    one that covers enough; a job that fails or is cancelled leaves it as it was."""
    gw = gateway_of(request)
    gw.routing.require_ready()
    record = existing(gw, name)
    for job in await writing(gw.registry.list_jobs(name)):
        if job.state in ACTIVE:
            raise APIError(409, f"model {name!r} has job {job.id} {job.state}: resume or cancel it first",
                           code="job_running")
    job = await writing(gw.jobs.start(record, body.options() if body else None, fresh=True))
    return JSONResponse({"job_id": job.id, "model": name}, status_code=202)


@router.get("/jobs")
async def list_jobs(request: Request, model: str | None = None, state: JobState | None = None) -> dict:
    """Profiling jobs, oldest first (of one model, in one state). A model that is neither
    registered nor has had a job is a 404: a misspelt name would list nothing, as a model
    without jobs does."""
    gw = gateway_of(request)
    jobs = await writing(gw.registry.list_jobs(model))
    if model is not None and not jobs and model not in gw.registry.snapshot():
        raise APIError(404, f"no model {model!r}", param="model", code="model_not_found")
    return {"data": [job_json(j) for j in jobs if state is None or j.state == state]}


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> dict:
    job = await writing(gateway_of(request).registry.get_job(job_id))
    if job is None:
        raise APIError(404, f"no job {job_id!r}", param="id", code="job_not_found")
    return job_json(job)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request) -> dict:
    """Stop a running or paused job. One cancelled already is answered as it is; one that ended
    otherwise (done, failed) is a 409, as pausing or resuming it is: nothing was stopped."""
    job = await writing(gateway_of(request).jobs.cancel(job_id))
    if job.state != "cancelled":
        raise APIError(409, f"job {job_id} is {job.state}, not running or paused", param="id", code="job_not_active")
    return job_json(job)


@router.post("/jobs/{job_id}/pause")
async def pause_job(job_id: str, request: Request) -> dict:
    """Pause a running job until it is resumed (by the operator only)."""
    return job_json(await writing(gateway_of(request).jobs.pause(job_id)))


@router.post("/jobs/{job_id}/resume")
async def resume_job(job_id: str, request: Request) -> dict:
    """Resume a paused job now."""
    return job_json(await writing(gateway_of(request).jobs.resume(job_id)))


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
    return {"enabled": True, "target": guard.target, "window_s": guard.window_s,
            "scopes": [s.to_dict() for s in await gw.budget_states()]}


@router.get("/drift")
async def drift(request: Request) -> dict:
    """Share of the recent routed prompts far from every cluster (threshold learned on the
    training prompts): when it grows well above `expected_share`, re-cluster."""
    router_ = gateway_of(request).router
    if router_ is None or router_.drift is None:
        return {"enabled": False, "reason": "the router state records no drift threshold (rebuild it with "
                                            "`uniroute build-state`)" if router_ is not None else "not ready"}
    return {"enabled": True, **router_.drift.snapshot()}
