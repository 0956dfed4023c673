"""A Responses API conversation stays with the model that holds it.

`previous_response_id` continues a conversation that the upstream which answered it stores; any
other upstream does not know the id. So the gateway remembers, in the registry (shared by every
worker and replica), which model answered each stored response, and a routed follow-up goes to
that model as if the client had named it. A turn of a Conversations API conversation
(`conversation`, its id or an object with one) is pinned the same way to the model that answered
its last turn. Without a memo (a response from before, from another gateway, or expired) the
follow-up is routed as usual. The same memo sends a stored response's
retrieve, delete, input items and cancel to that model's upstream (app/api/openai.py).

Every client's responses are stored under the one account of the gateway's upstream key, so
the memo also names its owner, the client key's scope (app/costs/budget.py `key_scope`): a
response or conversation another key made is, to a client, one the gateway does not know.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from app.errors import GatewayError
from models_registry.base import Registry, RegistryUnavailable

log = logging.getLogger("uniroute")

# As long as OpenAI keeps a stored response (30 days).
PIN_TTL_S = 30 * 24 * 3600.0


def _key(response_id: str) -> str:
    return f"response:{response_id}"


# Between a memo's owner and its model: a model's name is printable ASCII, a scope has no tab.
_OWNER_END = "\t"


def _memo(model: str, owner: str) -> str:
    return f"{owner}{_OWNER_END}{model}"


def _holder_for(memo: str | None, owner: str) -> str | None:
    """The model a memo names, if it is `owner`'s: None when there is none. Raises NotYours for
    another owner's. A memo written before memos had owners names its model alone."""
    if memo is None:
        return None
    memo_owner, end, model = memo.partition(_OWNER_END)
    if not end:
        return memo  # written before memos had owners
    if memo_owner != owner:
        raise NotYours()
    return model


class NotYours(Exception):
    """The response or conversation asked for is another client key's."""


async def held_by(registry: Registry, response_id: str, owner: str) -> str | None:
    """The model that answered the stored response `response_id`, if the gateway remembers it as
    `owner`'s; None otherwise (another owner's too). Raises RegistryUnavailable while the
    registry is away."""
    try:
        return _holder_for(await registry.recall(_key(response_id)), owner)
    except NotYours:
        return None


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


async def holder(registry: Registry, body: dict, owner: str) -> Pin | None:
    """What the Responses API request `body` of the client `owner` continues, its
    `previous_response_id` or its `conversation`, and the model holding it, if the gateway
    remembers one; None otherwise, or while the registry is away. Another owner's is a
    GatewayError (not found): routed as new, it would still reach the upstream storing it."""
    previous, conversation = body.get("previous_response_id"), conversation_id(body)
    if isinstance(previous, str) and previous:
        param, held, key = "previous_response_id", previous, _key(previous)
    elif conversation is not None:
        param, held, key = "conversation", conversation, _conversation_key(conversation)
    else:
        return None
    try:
        model = _holder_for(await registry.recall(key), owner)
    except RegistryUnavailable:
        log.warning("registry unavailable: %s %s is routed as a new conversation", param, held)
        return None
    except NotYours:
        raise GatewayError("not_found", f"the gateway knows no {param} '{held}' of this API key", param=param,
                           code="response_not_found") from None
    return None if model is None else Pin(param, held, model)


async def remember_holder(registry: Registry, body: dict, answer: object, model: str, owner: str) -> None:
    """Remember that `model` holds, for the client `owner`, the response `answer` (its JSON
    object, or None), unless the request asked the upstream not to store it (`store: false`), and
    the conversation the request added a turn to (each turn renews its memo)."""
    if not isinstance(answer, dict):
        return
    response_id = answer.get("id")
    keys = [_conversation_key(c) for c in (conversation_id(body),) if c is not None]
    if body.get("store") is not False and isinstance(response_id, str) and response_id:
        keys.append(_key(response_id))
    try:
        for key in keys:
            await registry.remember(key, _memo(model, owner), PIN_TTL_S)
    except RegistryUnavailable:
        log.warning("registry unavailable: a follow-up to response %s may go to another model", response_id)
