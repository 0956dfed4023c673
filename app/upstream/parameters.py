"""Request parameters a model's upstream refuses, and the request it takes in their place.

OpenAI's reasoning models (the o-series, gpt-5 and later, on OpenAI and Azure OpenAI alike)
refuse parameters every other chat model takes, with HTTP 400, `code` `unsupported_parameter`
or `unsupported_value` and `param` naming it: "Unsupported parameter: 'max_tokens' is not
supported with this model. Use 'max_completion_tokens' instead.", "Unsupported value:
'temperature' does not support 0 with this model. Only the default (1) value is supported."

Groq refuses a top-level field it does not know so (HTTP 400, no `code` nor `param`): "property
'store' is unsupported, did you mean 'stop'?", as OpenAI's own bookkeeping fields a client sends
(`store`, `metadata`, `service_tier`, ...); OpenAI's models without reasoning refuse the reasoning
hint so: "Unrecognized request argument supplied: reasoning_effort". Only the parameters this
module can mend are read from such a message: any other stays the client's error, as it was.

A router must not turn that into the client's error: the client did not choose the model. So a
parameter with the same meaning under another name is renamed (`RENAMED`), and a sampling setting
the model has no use for, a hint to a model that does not reason, or a field that only asks
OpenAI to keep or label the request, is left out (`DROPPED`, `HINTS`, `BOOKKEEPING`: the model
answers the same request, as an OpenRouter-style router
does with a parameter its chosen model ignores). The request then goes
to the same model again at once (it did no work), and the forwarder leaves that parameter out of
every later request to that model on that path, so that only the first pays the round trip.
Any other parameter refused so is a feature the model cannot take: `unsupported`, tried elsewhere
(app/upstream/faults.py), as the client's answer depends on it (`logprobs`, `stop`, `n`, ...).

The other way round, servers that do not know chat's `max_completion_tokens` ignore it without a
word (Ollama, LM Studio, llama-cpp-python): an answer the client bounded runs on to the end of the
context. So the limit goes upstream as `max_tokens`, which every server reads, but to a model
that refused that name (`for_upstream`). Likewise a `developer` message (OpenAI's new name for
the system prompt, which clients such as Codex send) goes as a `system` one: OpenAI's models take
either alike, while many chat templates refuse the role (vLLM: "Unexpected message role."; o1-mini:
"'messages[0].role' does not support 'developer'").
"""
from __future__ import annotations

import re
from typing import Any

# The codes of OpenAI's refusal of one named parameter for this model.
_CODES = frozenset({"unsupported_parameter", "unsupported_value"})
# Refusals of a top-level field that name it only in their message: Groq's (a nested field's names
# its path first: "'messages.0' : ...") and OpenAI's for an argument the model does not know.
_UNKNOWN = re.compile(r"property '(\w+)' is unsupported|Unrecognized request argument supplied: (\w+)")

# Same meaning, the name the model takes: the chat API's `max_tokens` is deprecated for
# `max_completion_tokens`, which every OpenAI chat model takes and reasoning models require.
RENAMED = {"max_tokens": "max_completion_tokens"}
# Sampling settings only: without them the model answers the same request, sampled its own way.
DROPPED = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})
# Fields asking OpenAI to keep, label or bill the request in some way, which the answer does not
# depend on. Not so on the Responses API, where `store` keeps what `previous_response_id` names.
BOOKKEEPING = frozenset({"store", "metadata", "service_tier", "user", "prompt_cache_key", "safety_identifier"})
# How much to reason and how long to answer, for a model that has no such settings.
HINTS = frozenset({"reasoning_effort", "verbosity"})
_MENDABLE = frozenset(RENAMED) | DROPPED | BOOKKEEPING | HINTS


def refused_parameter(error: Any) -> str | None:
    """The top-level request parameter an upstream's error body says this model does not take:
    OpenAI's `unsupported_parameter` / `unsupported_value` and its `param`, or one this module can
    mend named only in the message (Groq's, OpenAI's "Unrecognized request argument"); None
    otherwise."""
    inner = error.get("error") if isinstance(error, dict) else None
    if not isinstance(inner, dict):
        return None
    message = inner.get("message")
    if inner.get("code") not in _CODES:
        unknown = _UNKNOWN.match(message) if isinstance(message, str) else None
        name = unknown and (unknown.group(1) or unknown.group(2))
        return name if name in _MENDABLE else None
    param = inner.get("param")
    return param if isinstance(param, str) and param else None


def adaptable(param: str, path: str) -> bool:
    """Whether a parameter refused on `path` is renamed or left out rather than the request tried
    elsewhere."""
    return param in RENAMED or param in DROPPED or param in HINTS or (param in BOOKKEEPING and path != "/responses")


def adapted(body: dict, refused: frozenset[str]) -> dict:
    """`body` as a model that refused `refused` takes it: each renamed (`RENAMED`; dropped when the
    new name is already there, as that one wins) or left out. `body` itself is left as it is."""
    present = refused.intersection(body)
    if not present:
        return body
    out = {key: value for key, value in body.items() if key not in present}
    for old in present:
        new = RENAMED.get(old)
        if new is not None and new not in body:
            out[new] = body[old]
    return out


# Where each endpoint's body holds its messages (chat) or input items (Responses API).
_ITEMS = {"/chat/completions": "messages", "/responses": "input"}


def for_upstream(body: dict, refused: frozenset[str], path: str) -> dict:
    """`body` as a model that refused `refused` on `path` gets it: `developer` messages as `system`
    ones; chat's `max_completion_tokens` sent as `max_tokens` (unless the model refused that name,
    or the client gave both); then `adapted`."""
    items = body.get(_ITEMS.get(path, ""))
    if isinstance(items, list) and any(isinstance(m, dict) and m.get("role") == "developer" for m in items):
        body = {**body, _ITEMS[path]: [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer"
                                       else m for m in items]}
    if (path == "/chat/completions" and "max_completion_tokens" in body and "max_tokens" not in body
            and "max_tokens" not in refused):
        body = {("max_tokens" if key == "max_completion_tokens" else key): value for key, value in body.items()}
    return adapted(body, refused)
