"""A Responses API conversation stays with the model that holds it.

`previous_response_id` continues a conversation that the upstream which answered it stores; any
other upstream does not know the id. So the gateway remembers, in the registry (shared by every
worker and replica), which model answered each stored response, and a routed follow-up goes to
that model as if the client had named it. Without a memo (a response from before, from another
gateway, or expired) the follow-up is routed as usual. The same memo sends a stored response's
retrieve, delete, input items and cancel to that model's upstream (app/api/openai.py).
"""
from __future__ import annotations

import logging

from models_registry.base import Registry, RegistryUnavailable

log = logging.getLogger("uniroute")

# As long as OpenAI keeps a stored response (30 days).
PIN_TTL_S = 30 * 24 * 3600.0


def _key(response_id: str) -> str:
    return f"response:{response_id}"


async def held_by(registry: Registry, response_id: str) -> str | None:
    """The model that answered the stored response `response_id`, if the gateway remembers it;
    None otherwise. Raises RegistryUnavailable while the registry is away."""
    return await registry.recall(_key(response_id))


async def forget_holder(registry: Registry, response_id: str) -> None:
    """Forget who holds `response_id`, deleted at its upstream (while the registry is away the
    memo stays: a later request for it gets the upstream's own 404)."""
    try:
        await registry.forget(_key(response_id))
    except RegistryUnavailable:
        log.warning("registry unavailable: the deleted response %s is still remembered as held", response_id)


async def holder(registry: Registry, body: dict) -> str | None:
    """The model that answered the response `body` continues (its `previous_response_id`), if
    the gateway remembers it; None otherwise, or while the registry is away."""
    previous = body.get("previous_response_id")
    if not isinstance(previous, str) or not previous:
        return None
    try:
        return await held_by(registry, previous)
    except RegistryUnavailable:
        log.warning("registry unavailable: previous_response_id %s is routed as a new conversation", previous)
        return None


async def remember_holder(registry: Registry, body: dict, answer: object, model: str) -> None:
    """Remember that `model` holds the response `answer` (its JSON object, or None), unless the
    request asked the upstream not to store it (`store: false`)."""
    if body.get("store") is False or not isinstance(answer, dict):
        return
    response_id = answer.get("id")
    if not isinstance(response_id, str) or not response_id:
        return
    try:
        await registry.remember(_key(response_id), model, PIN_TTL_S)
    except RegistryUnavailable:
        log.warning("registry unavailable: a follow-up to response %s may go to another model", response_id)
