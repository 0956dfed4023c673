"""Profiling jobs: ask a model the representative prompts, grade its answers, compute Ψ.

A job stores every graded answer as it arrives, so a job interrupted by a restart resumes
asking only what is missing. With several replicas on one Redis a job runs once: the replica
holding the job's lock (with expiry, refreshed while it works) runs it; a replica that finds a
running job nobody holds takes it over.

`llm_judge` items are graded by the model named in `judge_model`, with this prompt:

    You are grading an answer against a reference answer.
    Question: <prompt>
    Reference answer: <reference>
    Answer to grade: <answer>
    Reply with exactly one word: CORRECT if the answer agrees with the reference, INCORRECT otherwise.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import GatewayError
from app.profiling.profiles import profile_from_answers
from app.runtime.metrics import Metrics
from app.upstream.forwarding import PURPOSE_HEADER, Forwarder
from models_registry.base import Registry, RegistryUnavailable
from models_registry.records import Answer as GradedAnswer
from models_registry.records import JobRecord, ModelRecord
from router_core.grading import grade
from router_core.judging import (
    JUDGE_MAX_TOKENS,
    JUDGE_PREFIX,
    judge_requests,
    judge_score,
    parse_judge_grader,
)
from router_core.repset import RepItem, RepsetClusters

log = logging.getLogger("uniroute.profiling")

JUDGE_PROMPT = (
    "You are grading an answer against a reference answer.\n"
    "Question: {prompt}\nReference answer: {reference}\nAnswer to grade: {answer}\n"
    "Reply with exactly one word: CORRECT if the answer agrees with the reference, INCORRECT otherwise."
)
LOCK_TTL_S = 30.0
# sent with every representative prompt asked (app.upstream.forwarding.PURPOSE_HEADER)
PROFILING_HEADERS = {PURPOSE_HEADER: "profiling"}


@dataclass(frozen=True)
class JobOptions:
    """How a profiling job calls the model."""

    concurrency: int
    max_tokens: int
    spend_cap: float | None


def answer_text(body: dict) -> str:
    """The text of a chat completion's first choice ('' when it has none)."""
    try:
        return body["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def usage_of(body: dict) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) of a completion body, zeros when absent."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


class JobRunner:
    """Runs profiling jobs inside one gateway; see the module docstring."""

    def __init__(self, registry: Registry, forwarder: Forwarder, metrics: Metrics,
                 clusters: Callable[[], RepsetClusters], options: JobOptions, judge_model: str | None) -> None:
        """`clusters` gives the representative set under the current router state."""
        self.registry = registry
        self.forwarder = forwarder
        self.metrics = metrics
        self.clusters = clusters
        self.options = options
        self.judge_model = judge_model
        self.owner = uuid.uuid4().hex
        self._tasks: dict[str, asyncio.Task] = {}

    async def start(self, record: ModelRecord) -> JobRecord:
        """Create a job for `record` (state `profiling`) and run it in the background."""
        repset = self.clusters()
        now = time.time()
        job = JobRecord(id=uuid.uuid4().hex[:16], model=record.name, state="running", done=0,
                        total=len(repset.repset.items), errors=0, spend=0.0, started_at=now, updated_at=now,
                        error=None, owner=self.owner)
        record.state = "profiling"
        record.error = None
        await self.registry.put_model(record)
        await self.registry.put_job(job)
        self._spawn(job)
        return job

    async def resume_orphans(self) -> None:
        """Take over running jobs that no live replica holds (after a restart or a crash)."""
        for job in await self.registry.list_jobs():
            if job.state == "running" and job.id not in self._tasks:
                self._spawn(job)

    async def sweep(self) -> None:
        """Resume orphaned jobs now and every lock period: a replica that died leaves its jobs'
        locks to expire, and the next sweep anywhere picks them up."""
        while True:
            try:
                await self.resume_orphans()
            except RegistryUnavailable:
                pass
            await asyncio.sleep(LOCK_TTL_S)

    async def cancel(self, job_id: str) -> JobRecord:
        """Stop a running job; its model is marked failed, its graded answers are kept."""
        job = await self.registry.get_job(job_id)
        if job is None:
            raise GatewayError("not_found", f"no job {job_id!r}", param="id", code="job_not_found")
        if job.state != "running":
            return job
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        job = await self.registry.get_job(job_id) or job
        job.state = "cancelled"
        job.updated_at = time.time()
        await self.registry.put_job(job)
        await self._mark_model(job.model, "failed", "profiling cancelled")
        return job

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
        if not await self.registry.acquire_lock(lock, self.owner, LOCK_TTL_S):
            return  # another replica runs it
        keeper = asyncio.create_task(self._keep_lock(lock))
        try:
            await self._run(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a job fails alone; the gateway goes on
            log.exception("profiling job %s for %s failed", job.id, job.model)
            await self._finish(job, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            try:
                await self.registry.release_lock(lock, self.owner)
            except RegistryUnavailable:
                pass  # the lock expires by itself

    async def _keep_lock(self, lock: str) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_S / 3)
            try:
                await self.registry.refresh_lock(lock, self.owner, LOCK_TTL_S)
            except RegistryUnavailable:
                log.warning("could not refresh %s: registry unavailable", lock)

    async def _run(self, job: JobRecord) -> None:
        record = self.registry.snapshot().get(job.model)
        if record is None:
            await self._finish(job, "failed", "the model was deleted")
            return
        clusters = self.clusters()
        repset = clusters.repset
        graded = await self.registry.answers(record.name, repset.version)
        # Answers that failed (upstream fault, judge fault) are asked again; good ones never.
        graded = {pid: a for pid, a in graded.items() if a.error is None}
        todo = [item for item in repset.items if item.id not in graded]
        job.done = len(graded)
        job.spend = sum(a.cost for a in graded.values())
        metrics = self.metrics
        metrics.profiling_total.labels(record.name).set(job.total)
        metrics.profiling_done.labels(record.name).set(job.done)
        started, done_at_start = time.monotonic(), job.done
        sem = asyncio.Semaphore(self.options.concurrency)
        cap = self.options.spend_cap
        over_cap = asyncio.Event()

        async def one(item: RepItem) -> None:
            async with sem:
                if over_cap.is_set():
                    return
                answer = await self._ask(record, item)
                await self.registry.record_answer(record.name, repset.version, answer)
                job.done += 1
                job.errors += answer.error is not None
                job.spend += answer.cost
                metrics.profiling_done.labels(record.name).set(job.done)
                metrics.profiling_spend.labels(record.name).inc(answer.cost)
                rate = (job.done - done_at_start) / max(time.monotonic() - started, 1e-6)
                job.eta_s = (job.total - job.done) / rate if rate > 0 else None
                job.updated_at = time.time()
                await self.registry.put_job(job)
                if cap is not None and job.spend >= cap:
                    over_cap.set()

        await asyncio.gather(*(one(item) for item in todo))
        if over_cap.is_set() and job.done < job.total:
            await self._finish(job, "failed", f"spend cap {cap:g} reached after {job.done} prompts")
            return
        profile = profile_from_answers(clusters, await self.registry.answers(record.name, repset.version))
        if profile is None:
            await self._finish(job, "failed", "no prompt was answered")
            return
        record = self.registry.snapshot().get(job.model) or record
        record.profile = profile
        record.profiled_at = time.time()
        record.spend = job.spend
        record.state = "ready"
        record.error = None
        await self.registry.put_model(record)
        job.state = "done"
        job.eta_s = 0.0
        job.updated_at = time.time()
        await self.registry.put_job(job)
        log.info("profiled %s: accuracy %.3f on %d prompts, spend %.4g", record.name,
                 record.profile.accuracy, record.profile.n_prompts, job.spend)

    async def answer(self, record: ModelRecord, item: RepItem) -> GradedAnswer:
        """Ask `record` one representative item and grade its answer: the unit of profiling,
        also used by a state migration (app/runtime/migration.py)."""
        return await self._ask(record, item)

    async def _ask(self, record: ModelRecord, item: RepItem) -> GradedAnswer:
        body = {"messages": [{"role": "user", "content": item.prompt}], "temperature": 0,
                "max_tokens": self.options.max_tokens}
        try:
            reply = await self.forwarder.send("/chat/completions", body, [record], PROFILING_HEADERS, stream=False)
        except GatewayError as exc:
            return GradedAnswer(prompt_id=item.id, score=0.0, cost=0.0, output_tokens=0, error=exc.message)
        if reply.status >= 400:
            message = str((reply.json or {}).get("error", {}).get("message", f"HTTP {reply.status}"))
            return GradedAnswer(prompt_id=item.id, score=0.0, cost=0.0, output_tokens=0, error=message)
        text = answer_text(reply.json)
        prompt_tokens, completion_tokens = usage_of(reply.json)
        cost = record.cost.expected(prompt_tokens, completion_tokens)
        try:
            score = await self._grade(item, text)
        except GatewayError as exc:  # the judge failed: an ungraded answer, asked again on resume
            return GradedAnswer(prompt_id=item.id, score=0.0, cost=cost, output_tokens=completion_tokens,
                                error=f"grading failed: {exc.message}")
        return GradedAnswer(prompt_id=item.id, score=score, cost=cost, output_tokens=completion_tokens, error=None)

    async def _grade(self, item: RepItem, text: str) -> float:
        if not item.grader.startswith(JUDGE_PREFIX):
            return grade(item.grader, text, item.reference)
        judge = self.registry.snapshot().get(self.judge_model or "")
        if judge is None:
            raise GatewayError("invalid", "an llm_judge item needs judge_model set to a registered model",
                           code="no_judge_model")
        kind = parse_judge_grader(item.grader)
        verdicts = []
        for messages in judge_requests(kind, item.prompt, item.reference, text):
            body = {"messages": messages, "temperature": 0, "max_tokens": JUDGE_MAX_TOKENS[kind]}
            reply = await self.forwarder.send("/chat/completions", body, [judge], {}, stream=False)
            if reply.status >= 400:
                raise GatewayError("upstream", f"the judge {judge.name} answered HTTP {reply.status}",
                                   code="judge_failed")
            verdicts.append(answer_text(reply.json or {}))
        score = judge_score(kind, verdicts)
        if score is None:
            raise GatewayError("upstream", f"the judge {judge.name} gave no verdict", code="judge_failed")
        return score

    async def _finish(self, job: JobRecord, state: str, error: str | None) -> None:
        job.state = state
        job.error = error
        job.updated_at = time.time()
        await self.registry.put_job(job)
        if state == "failed":
            await self._mark_model(job.model, "failed", error)

    async def _mark_model(self, name: str, state: str, error: str | None) -> None:
        record = self.registry.snapshot().get(name)
        if record is not None:
            record.state = state
            record.error = error
            await self.registry.put_model(record)
