"""What an answered request cost: token and cost metrics, savings, and the budget guard's books."""
from __future__ import annotations

from app.costs.budget import BudgetGuard, planned_cost
from app.routing.service import Destination, expectation
from app.runtime.metrics import Metrics
from models_registry.records import ModelRecord
from router_core.router import ModelTable


def usage_tokens(usage: object) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a `usage` object: chat/completions/embeddings name them
    prompt_tokens / completion_tokens, the Responses API input_tokens / output_tokens. None when
    they are not counts: a negative one is a provider's bookkeeping bug, which must not cost the
    client its answer (the token counters refuse to go down)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    if not isinstance(prompt, int) or not isinstance(completion, int) or prompt < 0 or completion < 0:
        return None
    return prompt, completion


def record_usage(metrics: Metrics, table: ModelTable, destination: Destination, record: ModelRecord,
                 usage: dict | None) -> float | None:
    """Tokens, cost, and cost saved against the most accurate routable model; the cost, or None
    when the answer reports no usable token counts."""
    counts = usage_tokens(usage)
    if counts is None:
        return None
    prompt, completion = counts
    metrics.child(metrics.tokens, record.name, "prompt").inc(prompt)
    metrics.child(metrics.tokens, record.name, "completion").inc(completion)
    spent = record.cost.expected(prompt, completion)
    metrics.child(metrics.cost, record.name).inc(spent)
    if destination.decision is not None and table.models:
        best = table.models[int(table.accuracy.argmax())]
        saved = best.price.expected(prompt, completion) - spent
        if saved > 0:
            metrics.cost_saved.inc(saved)
    return spent


async def bill(guard: BudgetGuard | None, table: ModelTable, destination: Destination, record: ModelRecord,
               spent: float | None) -> None:
    """Count an answer against the budget guard. Its planned cost is the calibration curve's
    expected cost per request at the λ it was routed with; a named model's plan is what it cost.
    An answer without usage counts at its expected cost."""
    if guard is None:
        return
    expected = expectation(destination, record)[1]
    spend = expected if spent is None else spent
    planned = None
    if destination.decision is not None:
        planned = planned_cost(table.calibration(), destination.decision.cost_weight)
    await guard.record(destination.scope, spend, spend if planned is None else planned)
