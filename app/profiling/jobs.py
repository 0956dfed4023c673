"""Profiling jobs: ask a model the representative prompts, grade its answers, compute Ψ.

A job stores every answer as it arrives (its text, grade and the grader's verdict), so a job
interrupted by a restart resumes asking only what is missing. With several replicas on one
Redis a job runs once: the replica holding the job's lock (with expiry, refreshed while it
works) runs it; a replica that finds a running job nobody holds takes it over.

Outages (README: Auditing a profile): a failed prompt (upstream fault, judge fault, a verdict
that cannot be read) is stored ungraded, never counted as answered, and asked again later in
the run (at most `attempts` times a run; an answer the judge failed is judged again, the model
not paid for it twice); each failure in a row doubles a wait before the next
request, from `backoff_s` up to `backoff_max_s`, and an upstream's Retry-After (the model's or the
judge's) is waited out, up to `backoff_max_s`. `pause_after` failures in a row, or a pass that
ends below the coverage floor, PAUSE the job (state `paused`, the reason in `error`): it resumes
by itself after `resume_after_s` (at most `auto_resumes` times) or when the operator resumes it.
A prompt the upstream answers with a 4xx that is no fault class (`declined`: "no recorded
answer", a prompt too long) is unanswerable: stored as such, not asked again in the pass, not a
failure in a row, and left out of the coverage count. An upstream that serves no
/chat/completions at the model's base_url (`no_endpoint`, app/upstream/faults.py: most often a
base_url without its `/v1`), refuses the gateway's key (`auth`) or does not know the model's name
(`not_found`) would refuse every prompt however long the job waited: the job FAILS at once, the
reason (with the field to PATCH) in its `error` and the model's. So does a `judge_model` that is
not registered or whose upstream so refuses it: every judged answer, paid for, would stay ungraded.

Routing is the model's, not the job's: a model with a profile keeps routing on it while a new
job runs (a reprofile), and keeps it when that job fails, is cancelled or hits its spend cap.
A job's profile replaces it only when the job covers at least `min_coverage` of its prompts and
`min_cluster_coverage` of their weight in every cluster.

Grading: `mc_letter` and the other pure graders read the item's prompt too; `code_tests` runs
in a worker thread (a sandboxed process); `llm_judge[:kind]` items are judged by the model
named in `judge_model`, one call per message list of `router_core.judging.judge_requests`,
whose cost counts in the job's spend and cap.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from app.costs.billing import usage_tokens
from app.errors import GatewayError
from app.profiling.profiles import coverage, profile_from_answers
from app.routing.prompts import chat_prompt_chars
from app.runtime.metrics import Metrics
from app.upstream.faults import UpstreamFault, error_message
from app.upstream.forwarding import PURPOSE_HEADER, Forwarder
from models_registry.base import LOCK_TTL_S, Registry, RegistryUnavailable, hold_lock
from models_registry.records import Answer as GradedAnswer
from models_registry.records import JobRecord, ModelRecord
from router_core.grading import grade
from router_core.judging import (
    JUDGE_MAX_TOKENS,
    JUDGE_PREFIX,
    VERDICT_LAST,
    judge_requests,
    judge_score,
    parse_judge_grader,
)
from router_core.pricing import estimate_tokens
from router_core.repset import RepItem, RepresentativeSet, RepsetClusters

log = logging.getLogger("uniroute.profiling")

# sent with every representative prompt asked (app.upstream.forwarding.PURPOSE_HEADER)
PROFILING_HEADERS = {PURPOSE_HEADER: "profiling"}
ACTIVE = ("running", "paused")


@dataclass(frozen=True)
class JobOptions:
    """How a profiling job calls the model: the gateway's defaults, or one job's own."""

    concurrency: int
    max_tokens: int
    spend_cap: float | None
    # ask only `limit` prompts of the set, drawn with `seed` (None: every prompt)
    limit: int | None = None
    seed: int = 0

    def merged(self, overrides: dict[str, Any]) -> JobOptions:
        """These options with a job's own (keys it leaves out, or sets to None, keep ours)."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in known and v is not None})


@dataclass(frozen=True)
class Resilience:
    """How jobs ride out upstream faults and when their answers may route (module docstring);
    built from the settings' `profile_*` fields, which hold the defaults."""

    backoff_s: float
    backoff_max_s: float
    attempts: int
    pause_after: int
    resume_after_s: float
    auto_resumes: int
    min_coverage: float
    min_cluster_coverage: float
    lock_ttl_s: float = LOCK_TTL_S  # a job's lock (Settings.lock_ttl_s)


@dataclass
class Grading:
    """What grading one answer gave: a score, or an error (ungraded); the judge's texts and cost."""

    score: float | None
    verdict: str | None = None
    judge_cost: float = 0.0
    error: str | None = None
    # the judge cannot grade any answer until the operator fixes it (Misregistered)
    judge_misregistered: bool = False
    retry_after: float | None = None  # the judge's Retry-After, when it asked to be left alone


def _first_choice(body: dict) -> dict:
    """A chat completion's first choice ({} when it has none, or the body is no chat completion)."""
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        return {}
    return choice if isinstance(choice, dict) else {}


def answer_text(body: dict) -> str:
    """The text of a chat completion's first choice ('' when it has none)."""
    message = _first_choice(body).get("message")
    return (message.get("content") or "") if isinstance(message, dict) else ""


def cut_off(body: dict) -> bool:
    """Whether a chat completion's first choice ended at its token limit (finish_reason "length")."""
    return _first_choice(body).get("finish_reason") == "length"


def job_warning(job: JobRecord) -> str | None:
    """What the operator should know of a job's profile, or None. Answers the model ended at the
    job's max_tokens are graded as cut, which an OpenAI reasoning model (its reasoning counts against
    the limit) may leave empty: its profile would say it answers badly where it answered nothing. A
    model judging its own answers favours them (as LLM judges are known to): its profile flatters it."""
    warnings = []
    if job.truncated:
        warnings.append(f"{job.truncated} of the {job.done} graded answers ended at the job's max_tokens and were "
                        "graded as cut (a reasoning model may spend them all reasoning and answer nothing): reprofile "
                        "with a larger max_tokens, unless clients will cap its answers so too")
    if job.judge is not None and job.judge == job.model:
        warnings.append("the model graded its own answers to the llm_judge items (it is the judge_model), and LLM "
                        "judges favour their own answers: set another judge_model and reprofile it")
    return "; ".join(warnings) or None


def billed_tokens(body: object, messages: list[dict], text: str) -> tuple[int, int]:
    """(prompt, completion) tokens a profiling or judge call (`messages` sent, `text` answered)
    is billed: its usage, or, when it reports no usable counts (none, or a negative one), as
    estimated from the text sent and answered, as a request is priced before its answer. A
    token-priced judge reporting no usage cost nothing against the job's spend cap, and a
    negative count took the spend down."""
    counts = usage_tokens(body.get("usage") if isinstance(body, dict) else None)
    if counts is not None:
        return counts
    return math.ceil(estimate_tokens(chat_prompt_chars(messages))), math.ceil(estimate_tokens(len(text)))


def is_judged(item: RepItem) -> bool:
    """Whether an LLM judge grades the item (`llm_judge`, `llm_judge:<kind>`)."""
    return item.grader.partition(":")[0] == JUDGE_PREFIX


def job_items(repset: RepresentativeSet, limit: int | None, seed: int, judge: bool = True) -> list[RepItem]:
    """The prompts a job asks, in file order: those it can grade (judged items only with a
    `judge`), all of them or `limit` drawn with `seed`."""
    items = [item for item in repset.items if judge or not is_judged(item)]
    if limit is None or limit >= len(items):
        return items
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), limit))]


class Misregistered(Exception):
    """The model's registration is wrong (its base_url, key or upstream name), or the judge's: every
    prompt would be refused, or left ungraded. `answer`: the one the model gave before the judge
    failed it, to store, and `spent` what asking and judging it spent, to count."""

    def __init__(self, reason: str, answer: GradedAnswer | None = None, spent: float = 0.0) -> None:
        super().__init__(reason)
        self.answer = answer
        self.spent = spent


# The registration field to fix for each fault that says the registration is wrong.
_FIX = {"no_endpoint": "base_url", "auth": "api_key_env", "not_found": "upstream_model"}


def misregistration(exc: GatewayError, record: ModelRecord) -> str | None:
    """Why every call to `record` would fail, when the call that failed with `exc` says its
    registration is wrong (the field to fix named); None for a fault that may pass."""
    fault = exc.__cause__
    if isinstance(fault, UpstreamFault) and fault.kind in _FIX:
        return (f"{fault}; fix it (PATCH /admin/models/{record.name} {{\"{_FIX[fault.kind]}\": ...}}), "
                "then reprofile the model")
    return None


class Pass:
    """One pass over a model's prompts (a job's, or a state migration's for one model):
    failures in a row, the backoff, why it stops."""

    def __init__(self, resilience: Resilience) -> None:
        self.policy = resilience
        self.in_a_row = 0
        self.not_before = 0.0
        self.pause_reason: str | None = None
        self.fail_reason: str | None = None  # asking more is pointless (Misregistered)
        self.last_error: str | None = None  # the last failure's, to say why prompts went ungraded
        self.over_cap = False
        self.overruled = False  # another process paused or cancelled the job
        self._stop = asyncio.Event()
        self._probing = False  # after failures, one request at a time tests whether they have passed

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def wait_turn(self) -> None:
        """Sleep out the backoff (which other failures may extend meanwhile), or until the pass
        stops. After a failure one request at a time goes out, until one gets an answer: a burst
        of requests into an outage would only pile up failures."""
        while not self.stopping:
            delay = self.not_before - time.monotonic()
            if delay <= 0:
                if not (self.in_a_row and self._probing):
                    self._probing = self.in_a_row > 0
                    return
                delay = 0.05  # a probe is out: look again soon
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass

    def succeeded(self) -> None:
        """An answer came (graded or declined): the upstream is up."""
        self.in_a_row = 0
        self._probing = False

    def failed(self, error: str) -> None:
        self.in_a_row += 1
        self.last_error = error
        self._probing = False
        p = self.policy
        wait = min(p.backoff_s * 2 ** (self.in_a_row - 1), p.backoff_max_s)
        self.not_before = max(self.not_before, time.monotonic() + wait)
        if self.in_a_row >= p.pause_after and self.pause_reason is None:
            self.pause_reason = f"{self.in_a_row} failures in a row; last: {error}"
            self._stop.set()

    def hold_off(self, retry_after: float | None) -> None:
        """An upstream (the model's or the judge's) asked to be left alone this long (its
        Retry-After): no request before then, up to the longest backoff. Asking sooner would only
        pay the model for answers the judge then refuses to grade, or be refused again."""
        if retry_after is not None:
            wait = min(retry_after, self.policy.backoff_max_s)
            self.not_before = max(self.not_before, time.monotonic() + wait)

    def misregistered(self, reason: str) -> None:
        """The upstream will refuse every prompt: stop, failed (the first reason stays)."""
        self.fail_reason = self.fail_reason or reason
        self._stop.set()

    @property
    def stop_reason(self) -> str | None:
        """Why the pass stopped asking before the end, for want of answers."""
        return self.fail_reason or self.pause_reason

    def cap_reached(self) -> None:
        self.over_cap = True
        self._stop.set()

    def overrule(self) -> None:
        self.overruled = True
        self._stop.set()


def declined_ids(answers: dict[str, GradedAnswer]) -> set[str]:
    """The prompts among `answers` that the model declined: unanswerable, not failures."""
    return {pid for pid, a in answers.items() if a.error is not None and a.declined}


def unjudged_answers(answers: dict[str, GradedAnswer]) -> dict[str, GradedAnswer]:
    """The answers among `answers` that the model gave and grading failed (the judge, most often):
    a pass graded them again rather than paying the model for them again. Not those whose model
    call failed (no text) nor those it declined."""
    return {pid: a for pid, a in answers.items() if a.error is not None and a.text is not None and not a.declined}


def too_little_graded(clusters: RepsetClusters, items: list[RepItem], stored: dict[str, GradedAnswer],
                      policy: Resilience) -> str | None:
    """Why a model's `stored` answers to `items` may not route yet (the coverage floors), or None.
    Prompts it declined are unanswerable, not failures: out of the coverage count."""
    declined = declined_ids(stored)
    graded = {pid for pid, a in stored.items() if a.error is None}
    cover = coverage(clusters, [item.id for item in items if item.id not in declined], graded)
    if cover.meets(policy.min_coverage, policy.min_cluster_coverage):
        return None
    return "too little graded to route on: " + cover.describe(policy.min_coverage, policy.min_cluster_coverage)


def with_last_failure(reason: str, last_error: str | None) -> str:
    """`reason` (too little graded) with the pass's last failure, which the coverage alone would
    not say: the model's upstream, the judge, its verdicts."""
    return reason if last_error is None else f"{reason}; last failure: {last_error}"


@dataclass(eq=False)
class JobRunner:
    """Runs profiling jobs inside one gateway; see the module docstring. `clusters` gives the
    representative set under the current router state; `forwarder` reports its upstream timings
    apart from client traffic (Metrics.for_profiling)."""

    registry: Registry
    forwarder: Forwarder
    metrics: Metrics
    clusters: Callable[[], RepsetClusters]
    options: JobOptions
    judge_model: str | None
    resilience: Resilience
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    _tasks: dict[str, asyncio.Task] = field(default_factory=dict, repr=False)

    async def start(self, record: ModelRecord, options: dict[str, Any] | None = None,
                    fresh: bool = False) -> JobRecord:
        """Create a job for `record` with its own `options` (JobOptions' fields) and run it in the
        background. `fresh` (a reprofile) asks every prompt again; the answers stored meanwhile
        stay, and a model with a profile keeps routing on it until the job has a better one."""
        job_options = self.options.merged(options or {})
        items, skipped = self._items(self.clusters().repset, job_options)
        now = time.time()
        job = JobRecord(id=uuid.uuid4().hex[:16], model=record.name, state="running", done=0,
                        total=len(items), errors=0, spend=0.0, started_at=now, updated_at=now, error=None,
                        owner=self.owner, since=now if fresh else None, options=dict(options or {}),
                        skipped=skipped)
        if record.profile is None:
            record.state = "profiling"
        record.error = None
        await self.registry.put_model(record)
        await self.registry.put_job(job)
        self._spawn(job)
        return job

    def _items(self, repset: RepresentativeSet, options: JobOptions) -> tuple[list[RepItem], int]:
        """The items a job asks, and how many judged items it leaves out: with no `judge_model`
        configured, `llm_judge` items cannot be graded, so they are not asked (the job says how
        many; the log warns)."""
        items = job_items(repset, options.limit, options.seed, judge=self.judge_model is not None)
        skipped = 0 if self.judge_model is not None else sum(map(is_judged, repset.items))
        return items, skipped

    async def resume_orphans(self) -> None:
        """Take over running jobs that no live replica holds (after a restart or a crash), and
        resume paused jobs whose time has come."""
        now = time.time()
        for job in await self.registry.list_jobs():
            if job.id in self._tasks:
                continue
            if job.state == "paused" and job.resume_at is not None and job.resume_at <= now:
                log.info("resuming paused profiling job %s for %s", job.id, job.model)
                job.resumes += 1
                await self._restart(job)
            elif job.state == "running":
                self._spawn(job)

    async def sweep(self) -> None:
        """Resume orphaned jobs now and every lock period (or sooner, to resume paused jobs on
        time): a replica that died leaves its jobs' locks to expire, and the next sweep anywhere
        picks them up."""
        ttl = self.resilience.lock_ttl_s
        period = min(ttl, max(self.resilience.resume_after_s / 6, 0.2)) if self.resilience.resume_after_s > 0 else ttl
        while True:
            try:
                await self.resume_orphans()
            except RegistryUnavailable:
                pass
            await asyncio.sleep(period)

    async def _job(self, job_id: str) -> JobRecord:
        job = await self.registry.get_job(job_id)
        if job is None:
            raise GatewayError("not_found", f"no job {job_id!r}", param="id", code="job_not_found")
        return job

    async def _stop_task(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def cancel(self, job_id: str) -> JobRecord:
        """Stop a running or paused job; its graded answers are kept, and its model keeps the
        profile it had (a model without one is marked failed)."""
        job = await self._job(job_id)
        if job.state not in ACTIVE:
            return job
        await self._stop_task(job_id)
        job = await self.registry.get_job(job_id) or job
        await self._finish(job, "cancelled", "cancelled by the operator")
        return job

    async def pause(self, job_id: str) -> JobRecord:
        """Pause a running job until the operator resumes it."""
        job = await self._job(job_id)
        if job.state != "running":
            raise GatewayError("conflict", f"job {job_id} is {job.state}, not running", code="job_not_running")
        await self._stop_task(job_id)
        job = await self.registry.get_job(job_id) or job
        await self._pause(job, "paused by the operator", automatic=False)
        return job

    async def resume(self, job_id: str) -> JobRecord:
        """Resume a paused job now (its automatic resumes counted afresh)."""
        job = await self._job(job_id)
        if job.state != "paused":
            raise GatewayError("conflict", f"job {job_id} is {job.state}, not paused", code="job_not_paused")
        job.resumes = 0
        await self._restart(job)
        return job

    async def _restart(self, job: JobRecord) -> None:
        job.state, job.error, job.resume_at, job.owner = "running", None, None, self.owner
        job.updated_at = time.time()
        await self.registry.put_job(job)
        self._spawn(job)

    async def follow_switch(self) -> None:
        """After a switch of router state and representative set, this process's running jobs
        start again on the new set: a job's profile must be made under the clusters it will route
        with, and the old set's prompts would only be paid for (what they graded stays stored)."""
        for job_id in list(self._tasks):
            await self._stop_task(job_id)
            job = await self.registry.get_job(job_id)
            if job is not None and job.state == "running":
                log.info("profiling job %s for %s goes on with the new representative set", job.id, job.model)
                self._spawn(job)

    async def close(self) -> None:
        """Stop this replica's jobs without changing their state: another start resumes them."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for job_id in list(self._tasks):
            await self.registry.release_lock(f"job:{job_id}", self.owner)
        self._tasks.clear()

    def _spawn(self, job: JobRecord) -> None:
        task = asyncio.create_task(self._guarded(job), name=f"profile:{job.model}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _t, jid=job.id: self._tasks.pop(jid, None))

    async def _guarded(self, job: JobRecord) -> None:
        lock = f"job:{job.id}"
        ttl = self.resilience.lock_ttl_s
        if not await self.registry.acquire_lock(lock, self.owner, ttl):
            return  # another replica runs it
        keeper = asyncio.create_task(hold_lock(self.registry, lock, self.owner, ttl))
        try:
            # Another process may have finished (or paused) the job between this one's listing it
            # as running and taking the lock it had just let go.
            current = await self.registry.get_job(job.id)
            if current is None or current.state != "running":
                return
            # its progress is written only while it is running under this process (put_running_job)
            job = current
            job.owner = self.owner
            await self.registry.put_job(job)
            await self._run(job)
        except asyncio.CancelledError:
            raise
        except RegistryUnavailable as exc:
            # The storage failed, not the job: failing it (should that write get through) would end
            # it for good on a blip. Its record stays `running`, its answers so far stored, and a
            # sweep (here or on another replica) resumes it once the registry takes writes again.
            log.warning("profiling job %s for %s stopped, to resume once the registry is back: %s",
                        job.id, job.model, exc)
        except Exception as exc:  # a job fails alone; the gateway goes on
            log.exception("profiling job %s for %s failed", job.id, job.model)
            await self._finish(job, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            self._forget_progress(job.model)
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            try:
                await self.registry.release_lock(lock, self.owner)
            except RegistryUnavailable:
                pass  # the lock expires by itself

    def _forget_progress(self, model: str) -> None:
        """Drop the model's progress series: a gauge left behind would show a stopped job as
        still at its last count."""
        for gauge in (self.metrics.profiling_done, self.metrics.profiling_total, self.metrics.profiling_declined):
            try:
                gauge.remove(model)
            except KeyError:
                pass

    async def _job_answers(self, job: JobRecord, version: str, items: list[RepItem]) -> dict[str, GradedAnswer]:
        """The job's stored answers to its prompts by prompt id (given since it began when it is
        a reprofile), graded or not."""
        wanted = {item.id for item in items}
        return {pid: a for pid, a in (await self.registry.answers(job.model, version)).items()
                if pid in wanted and (job.since is None or a.answered_at >= job.since)}

    async def _run(self, job: JobRecord) -> None:
        record = self.registry.snapshot().get(job.model)
        if record is None:
            await self._finish(job, "failed", "the model was deleted")
            return
        clusters = self.clusters()
        repset = clusters.repset
        options = self.options.merged(job.options)
        items, job.skipped = self._items(repset, options)
        job.judge = self.judge_model if any(map(is_judged, items)) else None
        if job.skipped:
            log.warning("profiling %s without its %d llm_judge items: no judge_model is configured",
                        job.model, job.skipped)
        stored = await self._job_answers(job, repset.version, items)
        graded = {pid for pid, a in stored.items() if a.error is None}
        # a resumed job does not ask again what the model declined before
        declined = declined_ids(stored)
        todo = [item for item in items if item.id not in graded and item.id not in declined]
        job.total, job.done, job.declined = len(items), len(graded), len(declined)
        job.truncated = sum(stored[pid].truncated for pid in graded)
        metrics = self.metrics
        metrics.profiling_total.labels(record.name).set(job.total)
        metrics.profiling_done.labels(record.name).set(job.done)
        metrics.profiling_declined.labels(record.name).set(job.declined)
        started, settled_at_start, spent_at_start = time.monotonic(), job.done + job.declined, job.spend
        run = Pass(self.resilience)
        cap = options.spend_cap

        async def settle(answer: GradedAnswer, spent: float) -> None:
            job.spend += spent
            if answer.error is None:
                job.done += 1
                job.truncated += answer.truncated
                metrics.profiling_done.labels(record.name).set(job.done)
            elif answer.declined:
                job.declined += 1
                metrics.profiling_declined.labels(record.name).set(job.declined)
            else:
                job.errors += 1
            # a declined prompt is settled as a graded one is: both advance the job
            settled = job.done + job.declined
            rate = (settled - settled_at_start) / max(time.monotonic() - started, 1e-6)
            job.eta_s = (job.total - settled) / rate if rate > 0 else None
            job.updated_at = time.time()
            if not await self.registry.put_running_job(job):
                run.overrule()
            if cap is not None and job.spend >= cap:
                run.cap_reached()

        try:
            # an answer paid for in an earlier pass whose grading failed: graded again, not asked again
            await self.ask_each(record, todo, options, run, repset.version, settle,
                                unjudged=unjudged_answers(stored))
        finally:  # a job cancelled in this process is stopped right here: what it spent still counts
            # as its stored record says, which the job's own views show (an answer being counted
            # when the run was cancelled may not have reached it)
            stored = await self.registry.get_job(job.id)
            await self._charge(job.model, (stored or job).spend - spent_at_start)
        if run.overruled:
            # paused or cancelled through another worker or replica, which wrote the job's state
            log.info("profiling job %s for %s stopped: its state was changed elsewhere", job.id, job.model)
            return
        if run.fail_reason is not None:
            await self._finish(job, "failed", run.fail_reason)
            return
        if run.pause_reason is not None:
            await self._pause(job, run.pause_reason)
            return
        if run.over_cap and job.done + job.declined < job.total:
            await self._finish(job, "failed", f"spend cap {cap:g} reached after {job.done} of {job.total} prompts")
            return
        stored = await self._job_answers(job, repset.version, items)
        answers = {pid: a for pid, a in stored.items() if a.error is None}
        short = too_little_graded(clusters, items, stored, self.resilience)
        if short is not None:
            await self._pause(job, with_last_failure(short, run.last_error))
            return
        profile = profile_from_answers(clusters, answers)
        assert profile is not None  # coverage met: some answer is graded
        job.updated_at = time.time()
        if not await self.registry.put_running_job(job):
            return  # paused or cancelled elsewhere meanwhile: its profile waits for a resume
        record = self.registry.snapshot().get(job.model) or record
        record.profile = profile
        record.profiled_at = time.time()
        record.state = "ready" if record.enabled else "disabled"
        record.error = None
        await self.registry.put_model(record)
        job.state, job.error = "done", None
        job.eta_s = 0.0
        job.updated_at = time.time()
        await self.registry.put_job(job)
        log.info("profiled %s: accuracy %.3f on %d prompts, spend %.4g", record.name,
                 record.profile.accuracy, record.profile.n_prompts, job.spend)
        if (warning := job_warning(job)) is not None:
            log.warning("profiling job %s for %s: %s", job.id, job.model, warning)

    async def _charge(self, model: str, amount: float) -> None:
        """Add what a run of a job spent to its model's `spend`: every job's, whatever its end."""
        record = self.registry.snapshot().get(model)
        if record is not None and amount > 0:
            record.spend += amount
            await self.registry.put_model(record)

    async def ask_each(self, record: ModelRecord, items: list[RepItem], options: JobOptions, run: Pass,
                       version: str, settle: Callable[[GradedAnswer, float], Awaitable[None]],
                       gate: asyncio.Semaphore | None = None,
                       unjudged: dict[str, GradedAnswer] | None = None) -> None:
        """Ask `record` each of `items` (`options.concurrency` at a time, and under `gate` when
        several models' passes share one bound), store every answer under the set `version`, then
        count what it spent (`uniroute_profiling_cost_total`) and hand it to `settle` with that. A
        failed item is asked again once the others have had their turn, at most `attempts` times
        (an answer the judge failed to grade is judged again, not asked again); a declined one is
        not; failures in a row back off and may stop `run` (module docstring). `unjudged`: the
        answers an earlier pass paid for whose grading failed (`unjudged_answers`), graded again
        too. Also a state migration's, per model (app/runtime/migration.py)."""
        todo = deque(items)
        tries: Counter[str] = Counter()
        spend_metric = self.metrics.profiling_spend.labels(record.name)

        async def counted(answer: GradedAnswer, spent: float) -> None:
            # here, not in `settle`: a migration's calls are paid for as a job's are
            spend_metric.inc(spent)
            await settle(answer, spent)

        # answers paid for that the judge failed to grade: judged again, the model not asked again
        unjudged = dict(unjudged or {})

        async def worker() -> None:
            while todo and not run.stopping:
                item = todo.popleft()
                await run.wait_turn()
                if run.stopping:
                    return
                try:
                    earlier = unjudged.pop(item.id, None)
                    async with gate or contextlib.nullcontext():
                        answer, spent = await self._ask(record, item, options, run, earlier)
                except Misregistered as exc:
                    if exc.answer is not None:  # paid for before the judge failed it: stored and counted
                        await self.registry.record_answer(record.name, version, exc.answer)
                        await counted(exc.answer, exc.spent)
                    run.misregistered(str(exc))
                    return
                await self.registry.record_answer(record.name, version, answer)
                if answer.error is not None and answer.text is not None:  # the model answered; grading failed
                    unjudged[item.id] = answer
                if answer.error is None or answer.declined:  # the upstream is up; a declined item is not asked again
                    run.succeeded()
                else:
                    run.failed(answer.error)
                    tries[item.id] += 1
                    if tries[item.id] < self.resilience.attempts:
                        todo.append(item)
                await counted(answer, spent)

        await asyncio.gather(*(worker() for _ in range(max(1, min(options.concurrency, len(todo))))))

    async def _ask(self, record: ModelRecord, item: RepItem, options: JobOptions, run: Pass,
                   earlier: GradedAnswer | None = None) -> tuple[GradedAnswer, float]:
        """`record`'s answer to `item`, graded, or an ungraded one saying why, with what this call
        spent; an upstream's Retry-After holds `run` off. `earlier`: the model's answer that the
        judge failed to grade, graded again rather than paid for again (its `cost` keeps the
        model's share, which this call does not spend)."""
        def failed(error: str, cost: float = 0.0, output_tokens: int = 0, **audit: Any) -> GradedAnswer:
            """An ungraded answer: stored for audit, asked again."""
            return GradedAnswer(prompt_id=item.id, score=0.0, cost=cost, output_tokens=output_tokens, error=error,
                                grader=item.grader, answered_at=time.time(), **audit)

        if earlier is not None:
            text, completion_tokens, cost = earlier.text or "", earlier.output_tokens, earlier.cost - earlier.judge_cost
            paid, truncated = 0.0, earlier.truncated
        else:
            body = {"messages": [{"role": "user", "content": item.prompt}], "temperature": 0,
                    "max_tokens": options.max_tokens}
            try:
                reply = await self.forwarder.send("/chat/completions", body, [record], PROFILING_HEADERS,
                                                  stream=False)
            except GatewayError as exc:
                reason = misregistration(exc, record)
                if reason is not None:
                    raise Misregistered(reason) from exc
                run.hold_off(exc.retry_after)
                return failed(exc.message), 0.0
            if reply.status >= 400:  # a 4xx the fault classes leave to the caller: this prompt is refused
                return failed(error_message(reply.json) or f"HTTP {reply.status}", declined=True), 0.0
            text, truncated = answer_text(reply.json), cut_off(reply.json or {})
            prompt_tokens, completion_tokens = billed_tokens(reply.json, body["messages"], text)
            cost = paid = record.cost.expected(prompt_tokens, completion_tokens)
        graded = await self._grade(item, text)
        run.hold_off(graded.retry_after)
        spent = paid + graded.judge_cost
        if graded.score is None:
            answer = failed(f"grading failed: {graded.error}", cost=cost + graded.judge_cost,
                            output_tokens=completion_tokens, text=text, verdict=graded.verdict,
                            judge_cost=graded.judge_cost, truncated=truncated)
            if graded.judge_misregistered:
                raise Misregistered(str(graded.error), answer, spent)
            return answer, spent
        return GradedAnswer(prompt_id=item.id, score=graded.score, cost=cost + graded.judge_cost,
                            output_tokens=completion_tokens, error=None, text=text, grader=item.grader,
                            verdict=graded.verdict, judge_cost=graded.judge_cost, answered_at=time.time(),
                            truncated=truncated), spent

    async def _grade(self, item: RepItem, text: str) -> Grading:
        if is_judged(item):
            return await self._judge(item, text)
        if item.grader == "code_tests":  # runs a sandboxed process: off the event loop
            return Grading(await asyncio.to_thread(grade, item.grader, text, item.reference, item.prompt))
        return Grading(grade(item.grader, text, item.reference, prompt=item.prompt))

    async def _judge(self, item: RepItem, text: str) -> Grading:
        """One judge call per message list; any failure or an unreadable verdict: ungraded. A judge
        that is not registered, or whose registration its upstream refuses, would leave every
        judged answer ungraded, each one paid for: `judge_misregistered`, which stops the pass."""
        kind = parse_judge_grader(item.grader)
        judge = self.registry.snapshot().get(self.judge_model or "")
        if judge is None:
            return Grading(None, error=f"judge_model {self.judge_model!r} is not a registered model: register it "
                                       "(or name a registered one in judge_model), then reprofile the model",
                           judge_misregistered=True)
        verdicts: list[str] = []
        spent = 0.0
        cut = False
        for messages in judge_requests(kind, item.prompt, item.reference, text):
            body = {"messages": messages, "temperature": 0, "max_tokens": JUDGE_MAX_TOKENS[kind]}
            try:
                reply = await self.forwarder.send("/chat/completions", body, [judge], {}, stream=False)
            except GatewayError as exc:
                reason = misregistration(exc, judge)
                return Grading(None, "\n\n".join(verdicts) or None, spent,
                               f"the judge {judge.name}: {reason or exc.message}", reason is not None,
                               exc.retry_after)
            if reply.status >= 400:  # its own reason says what to fix: a prompt too long for it, a parameter
                return Grading(None, "\n\n".join(verdicts) or None, spent,
                               f"the judge {judge.name} answered HTTP {reply.status}: "
                               f"{error_message(reply.json) or 'no reason given'}")
            verdicts.append(answer_text(reply.json or {}))
            spent += judge.cost.expected(*billed_tokens(reply.json, messages, verdicts[-1]))
            cut |= cut_off(reply.json or {})
        verdict = "\n\n".join(verdicts)
        score = None if cut and kind in VERDICT_LAST else judge_score(kind, verdicts, text)
        if score is None:
            why = (f": its reply was cut at its limit of {JUDGE_MAX_TOKENS[kind]} tokens before a verdict (a reasoning "
                   "model may spend them all reasoning)") if cut else f" gave no {kind} verdict"
            return Grading(None, verdict, spent, f"the judge {judge.name}{why}")
        return Grading(score, verdict, spent)

    async def _pause(self, job: JobRecord, reason: str, automatic: bool = True) -> None:
        policy = self.resilience
        again = automatic and policy.resume_after_s > 0 and job.resumes < policy.auto_resumes
        job.state, job.error, job.eta_s = "paused", reason, None
        job.resume_at = time.time() + policy.resume_after_s if again else None
        job.updated_at = time.time()
        await self.registry.put_job(job)
        log.warning("profiling job %s for %s paused: %s", job.id, job.model, reason)
        record = self.registry.snapshot().get(job.model)
        if record is not None and record.enabled:  # a disabled model keeps the reason it was disabled for
            record.error = f"profiling job {job.id} paused: {reason}"
            await self.registry.put_model(record)

    async def _finish(self, job: JobRecord, state: str, error: str) -> None:
        """End a job that made no profile (failed, cancelled): its model keeps the profile it
        had and goes on routing on it; a model without one is marked failed."""
        job.state, job.error, job.resume_at, job.eta_s = state, error, None, None
        job.updated_at = time.time()
        await self.registry.put_job(job)
        record = self.registry.snapshot().get(job.model)
        if record is None:
            return
        if record.profile is not None:
            if record.enabled:  # a disabled model keeps the reason it was disabled for
                record.state = "ready"
                record.error = f"profiling job {job.id} {state}: {error}; routing on the earlier profile"
        else:
            record.state, record.error = "failed", error
        await self.registry.put_model(record)
