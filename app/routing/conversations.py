"""A Responses API conversation stays with the model that holds it.

`previous_response_id` continues a conversation that the upstream which answered it stores; any
other upstream does not know the id. So the gateway remembers, in the registry (shared by every
worker and replica), which model answered each stored response, and a routed follow-up goes to
that model as if the client had named it. A turn of a Conversations API conversation
(`conversation`, its id or an object with one) is pinned the same way to the model that answered
its last turn. Without a memo (a response from before, from another gateway, or expired) the
follow-up is routed as usual. The same memo sends a stored response's
retrieve, delete, input items and cancel to that model's upstream (app/api/openai.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Pin:
    """A request continues what `model` holds: the id `held` given in the body's `param`."""

    param: str
    held: str
    model: str


def _conversation_key(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


def conversation_id(body: dict) -> str | None:
    """The conversation a Responses API request adds a turn to: `conversation` is its id, or an
    object with one."""
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    return conversation if isinstance(conversation, str) and conversation else None


async def holder(registry: Registry, body: dict) -> Pin | None:
    """What the Responses API request `body` continues, its `previous_response_id` or its
    `conversation`, and the model holding it, if the gateway remembers one; None otherwise, or
    while the registry is away."""
    previous, conversation = body.get("previous_response_id"), conversation_id(body)
    if isinstance(previous, str) and previous:
        param, held, key = "previous_response_id", previous, _key(previous)
    elif conversation is not None:
        param, held, key = "conversation", conversation, _conversation_key(conversation)
    else:
        return None
    try:
        model = await registry.recall(key)
    except RegistryUnavailable:
        log.warning("registry unavailable: %s %s is routed as a new conversation", param, held)
        return None
    return None if model is None else Pin(param, held, model)


async def remember_holder(registry: Registry, body: dict, answer: object, model: str) -> None:
    """Remember that `model` holds the response `answer` (its JSON object, or None), unless the
    request asked the upstream not to store it (`store: false`), and the conversation the request
    added a turn to (each turn renews its memo)."""
    if not isinstance(answer, dict):
        return
    response_id = answer.get("id")
    keys = [_conversation_key(c) for c in (conversation_id(body),) if c is not None]
    if body.get("store") is not False and isinstance(response_id, str) and response_id:
        keys.append(_key(response_id))
    try:
        for key in keys:
            await registry.remember(key, model, PIN_TTL_S)
    except RegistryUnavailable:
        log.warning("registry unavailable: a follow-up to response %s may go to another model", response_id)
