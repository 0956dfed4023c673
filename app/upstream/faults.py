"""The fault taxonomy of upstream answers: what went wrong, and what the gateway does about it.

Every failed upstream attempt gets one class, which labels `uniroute_upstream_failures_total`
and decides, by `POLICIES`, whether the same model is asked again (retry), whether the next
model in the routing order is tried (fallback), whether the failure counts toward the model's
cooldown, and whether the model is taken out of routing until an operator re-enables it.

A completion request is not idempotent: once the upstream may have received it, asking again
may bill twice. So the same model is retried only when it surely did no work: the request never
left (`connect`, `write`) or the upstream refused it with a status (429, 5xx, TGI's 424, and 408:
`request_timeout`, the upstream gave up waiting for the request; some servers also send it on a
kept-alive connection they close). After the request was sent and the answer broke (`timeout`,
`read`, `disconnect`, `cut`, `bad_body`) the gateway does not ask that model again; it falls
back to the next model, whose answer the client needs.

An upstream that says when to come back (`Retry-After`, in seconds or as an HTTP date; OpenAI's
`retry-after-ms`) on a failure that counts toward cooldown (429, 503, ...) is taken at its word:
the model is cooled down at once for that long, as every request routed there meanwhile would be
refused again (a longer cooldown already running stays), and the same model is asked again only
after waiting it out, when the wait is at most `retry_after_max_s` and ends before the request's
deadline. A longer wait sends the request to the next model at once. With no model left, the
client is told to come back after the last one's wait: a 429 as a 429, a 503 with a Retry-After
as a 503, each with that Retry-After (app/upstream/forwarding.py, `all_failed`).

An upstream that refuses the gateway's own credentials (401/403: `auth`), no longer knows the
model name (404 on /chat/completions, the endpoint every model was profiled through, saying so
of the model: `not_found`) or serves no /chat/completions at the model's `base_url` at all (a
404 naming no model, as servers answer a path they do not serve: `no_endpoint`, most often a
base_url without its `/v1`) will refuse every request: the model is disabled in the registry
(`enabled` false, state `disabled`, `error` starting with `FAULT_PREFIX` and saying which), which
every replica sees, and stays out until `PATCH /admin/models/{name} {"enabled": true}`. A
profiling job meeting `no_endpoint` fails at once with that reason (app/profiling/jobs.py).
Neither the provider's message nor anything else of its answer reaches the client.

Any other 4xx is the client's own mistake (bad parameters): its answer goes back to the client
as the upstream sent it; except a refusal another model may not share, where the router chose
the model: a prompt longer than the model's context (`context_length`, told by OpenAI's, vLLM's,
llama.cpp's, TGI's and LM Studio's error bodies, or by such an error opening a stream) or a body
larger than that upstream takes (413: `too_large`; the gateway itself took it, under its own
`max_body_bytes`), or a feature of the request the model or its server cannot take (`unsupported`:
images to a text-only model, tools to a server not set up for them, told by OpenAI's, vLLM's,
llama.cpp's and Ollama's error bodies). The next model is tried, the model as healthy as before; when none is left
the client gets the last refusal as the upstream sent it, streamed or not. A 5xx whose body says
the prompt is longer than the context (llama.cpp's server answers some such prompts with HTTP
500 "Context size has been exceeded.", llama.cpp issue #19774) is `context_length` too, not
`server`: asking the same model again cannot mend it, and it says nothing of the model's health;
with no model left its refusal reaches the client as a 400, as one told in place of an answer
does. So is llama.cpp's HTTP 500 for images to a model without its projector or for tools to a
server started without `--jinja` (`unsupported`).
A 404 about a stored response (`/responses/{id}`, `/responses/{id}/input_items`, ...) says that
response is gone, not the model: the client gets it as the upstream sent it.
"""
from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Literal

from app.upstream.http1 import ConnectFailed, Disconnected, UpstreamError, WriteFailed
from app.upstream.parameters import adaptable, refused_parameter

FaultClass = Literal["connect", "write", "timeout", "read", "disconnect", "auth", "not_found", "no_endpoint",
                     "rate_limit", "server", "request_timeout", "bad_body", "cut", "context_length", "too_large",
                     "unsupported", "client_error"]

# The path every registered model was profiled through: a 404 there means the model is gone (or,
# naming no model, that the model's base_url is wrong).
PROFILED_PATH = "/chat/completions"
# Where the upstream keeps the Responses API's stored responses: `/responses/{id}[/...]`.
STORED_RESPONSES = "/responses/"
# The start of a registry record's `error` when a fault disabled the model: "upstream fault <class>: ...".
FAULT_PREFIX = "upstream fault "


@dataclass(frozen=True)
class Policy:
    """What the gateway does after one failed attempt of a class."""

    retry: bool  # ask the same model again (up to `retries`)
    fallback: bool  # try the next model of the routing order
    cooldown: bool  # count toward the model's cooldown
    disable: bool  # take the model out of routing (for a 404: only on PROFILED_PATH)


# The request surely did no work (it never left, never arrived whole, or was refused at once):
# the same model may be asked again.
_RETRY = Policy(retry=True, fallback=True, cooldown=True, disable=False)
# The request was sent and may have been worked on: the next model, never the same one again.
_NEXT = Policy(retry=False, fallback=True, cooldown=True, disable=False)
# The provider refuses the gateway's key, no longer knows the model or is not where the model
# says: out of routing.
_REFUSED = Policy(retry=False, fallback=True, cooldown=False, disable=True)
# This request does not fit this model (its context, its upstream's body limit, a feature it
# lacks): another may take it; the model is as healthy as before.
_ELSEWHERE = Policy(retry=False, fallback=True, cooldown=False, disable=False)

POLICIES: dict[FaultClass, Policy] = {
    **dict.fromkeys(("connect", "write", "rate_limit", "server", "request_timeout"), _RETRY),
    **dict.fromkeys(("timeout", "read", "disconnect", "bad_body", "cut"), _NEXT),
    **dict.fromkeys(("auth", "not_found", "no_endpoint"), _REFUSED),
    **dict.fromkeys(("context_length", "too_large", "unsupported"), _ELSEWHERE),
    # the client's own mistake: back to it as the upstream said it
    "client_error": Policy(retry=False, fallback=False, cooldown=False, disable=False),
}
# The status classes whose answer may reach the client as the upstream sent it: at once
# (`client_error`, unless its body says `context_length`), or when no model is left to try.
RELAYED: frozenset[FaultClass] = frozenset({"client_error", "too_large"})
# The status classes whose body is read: those relayed; a 404's, never relayed but telling an
# unknown model (`not_found`) from a path the upstream does not serve (`no_endpoint`); and a 5xx's,
# never relayed either but telling a prompt longer than the context (`context_length`) or a
# feature the server cannot take (`unsupported`) from the server's own failure.
READ_BODY: frozenset[FaultClass] = RELAYED | {"not_found", "server"}
# The classes of a 404: on another path than PROFILED_PATH, the endpoint is not served there.
_NOT_FOUND: frozenset[FaultClass] = frozenset({"not_found", "no_endpoint"})

# How a 404 speaks of the model: OpenAI's `model_not_found` and "The model `x` does not exist",
# vLLM's "The model `x` does not exist.", Ollama's `model "x" not found`, Azure's
# `DeploymentNotFound` (a deployment is its model).
_MODEL_WORDS = re.compile(rb"model|deployment", re.IGNORECASE)

# How servers say a prompt is longer than the model's context: OpenAI's `code`, llama.cpp's
# `type`, and the messages of OpenAI and vLLM ("maximum context length is N tokens"), llama.cpp
# ("exceeds the available context size"; with HTTP 500 and type `server_error`, "Context size has
# been exceeded."), TGI ("`inputs` tokens + `max_new_tokens` must be <= N",
# "`inputs` must have less than N tokens") and LM Studio ("... is greater than the context
# length (n_keep: N>= n_ctx: M)", earlier "... loaded with context length of only N tokens").
# Whole phrases only: a 5xx is read for them, and "context" or "exceeded" alone says nothing.
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error"}
_CONTEXT_MESSAGE = re.compile(r"maximum context length|exceeds the available context size"
                              r"|context size has been exceeded"
                              r"|tokens \+ `max_new_tokens` must be <=|`inputs` must have less than"
                              r"|greater than the context length|context length of only", re.IGNORECASE)

# How servers say the model, or the server as it was started, cannot take a feature the request
# uses. Images to a text-only model: OpenAI's "Invalid content type. image_url is only supported by
# certain models." (HTTP 400, `code` null), vLLM's "<model> is not a multimodal model" (400) and
# llama.cpp's "image input is not supported - hint: if this is unexpected, you may need to provide
# the mmproj" (HTTP 500). Tools to a server not set up for them: vLLM's "'auto' tool choice
# requires --enable-auto-tool-choice and --tool-call-parser to be set" (400), llama.cpp's "tools
# param requires --jinja flag" (500) and Ollama's "<model> does not support tools" (400).
# Whole phrases only, as for the context: a 5xx is read for them.
_UNSUPPORTED_MESSAGE = re.compile(r"image_url is only supported by certain models|is not a multimodal model"
                                  r"|image input is not supported|tool choice requires --enable-auto-tool-choice"
                                  r"|tools param requires --jinja flag|does not support tools")

# The gateway's words for a refusal of the request for what the model is, which its error body told.
REFUSALS: dict[FaultClass, str] = {"context_length": "the prompt does not fit the context of {model}",
                                   "unsupported": "the upstream of {model} cannot take a feature the request uses"}

# How much of an upstream's error message the gateway's own error carries.
MESSAGE_CHARS = 500


def _error_of(body: Any) -> dict | str | None:
    """What an upstream's error body holds: `{"error": {...}}` as OpenAI, llama.cpp and recent vLLM
    send it, the fields at the top level (`"object": "error"`) as earlier vLLM releases did, or
    `{"error": "<message>"}` as TGI and LM Studio do; None for another body."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, (dict, str)):
        return error
    return body if body.get("object") == "error" else None


def exceeds_context(body: Any) -> bool:
    """Whether an upstream's error body says the prompt is longer than the model's context."""
    error = _error_of(body)
    if isinstance(error, str):
        return bool(_CONTEXT_MESSAGE.search(error))
    if error is None:
        return False
    if error.get("code") in _CONTEXT_CODES or error.get("type") in _CONTEXT_CODES:
        return True
    return isinstance(error.get("message"), str) and bool(_CONTEXT_MESSAGE.search(error["message"]))


def refuses_feature(body: Any, path: str | None = None) -> bool:
    """Whether an upstream's error body says the model or its server cannot take a feature the
    request uses: images, tools, a request parameter (app/upstream/parameters.py) but for one that
    the forwarder renames or leaves out on `path` and asks again (None: on no path)."""
    message = error_message(body)
    if message is not None and _UNSUPPORTED_MESSAGE.search(message):
        return True
    param = refused_parameter(body)
    return param is not None and (path is None or not adaptable(param, path))


def elsewhere(body: Any, path: str | None = None) -> FaultClass | None:
    """The class of an upstream's error body refusing this request for what this model is, which
    another model may take (`context_length`, `unsupported`: `refuses_feature` on `path`); None for
    any other error."""
    if exceeds_context(body):
        return "context_length"
    return "unsupported" if refuses_feature(body, path) else None


def error_message(body: Any) -> str | None:
    """The message of an upstream's error body (cut to MESSAGE_CHARS), None if it has none."""
    error = _error_of(body)
    message = error.get("message") if isinstance(error, dict) else error
    return message[:MESSAGE_CHARS] if isinstance(message, str) and message.strip() else None


def error_answer(body: Any) -> bool:
    """Whether a 2xx body is an error rather than an answer: `{"error": ...}` (LM Studio sends its
    `{"error": "<message>"}` so with HTTP 200) or vLLM's `{"object": "error", ...}`. A Responses
    API response object has an `error` too (null, or why that response failed): it is an answer."""
    return isinstance(body, dict) and (body.get("object") == "error" or (
        body.get("error") is not None and body.get("object") != "response"))


def names_model(body: bytes) -> bool:
    """Whether a 404's body is about the model rather than the URL. A server says nothing of a
    model for a path it does not serve: FastAPI's `{"detail": "Not Found"}` (vLLM, SGLang),
    OpenAI's "Invalid URL (POST /chat/completions)", llama.cpp's "File Not Found", TGI's empty
    body, a proxy's HTML page."""
    return _MODEL_WORDS.search(body) is not None


def refuses_stream_options(body: bytes | None) -> bool:
    """Whether a 4xx error body names `stream_options` ("Unrecognized request argument supplied:
    stream_options", "Unknown parameter: 'stream_options'", pydantic's extra-field error)."""
    return body is not None and b"stream_options" in body


class UpstreamFault(Exception):
    """A failed attempt: its class (`kind`) and a description the client may see, in the gateway's
    words; only an error the upstream put where its answer should be (a 200 body, a stream's
    opening event), which it meant for the client, adds its message."""

    def __init__(self, kind: FaultClass, detail: str, status: int | None = None, reply: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status
        # The upstream's own refusal, answered as it is when no model is left to try (context_length).
        self.reply = reply
        # Seconds the upstream asked not to be called for (its Retry-After), if it said.
        self.retry_after = retry_after

    @property
    def policy(self) -> Policy:
        return POLICIES[self.kind]


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """How long an upstream's answer asks not to be called again, in seconds: OpenAI's
    `retry-after-ms`, else `Retry-After` as seconds or as an HTTP date (`now`: the wall clock's
    time.time(); a date gone by is 0). None when the headers say nothing readable."""
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, the source's zone unknown (RFC 5322)
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def _seconds(text: str | None) -> float | None:
    """`text` as a finite number of seconds, not negative; None otherwise. RFC 9110 says whole
    seconds, but some servers send fractions, which the openai SDK also reads."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < math.inf else None  # not NaN, infinite or negative


def disables(kind: FaultClass, path: str) -> bool:
    """Whether a fault of `kind` on `path` takes the model out of routing. A 404 on another path
    than the profiled one says the endpoint is not served there (a chat-only model asked for
    /completions), not that the model is gone."""
    return POLICIES[kind].disable and (kind not in _NOT_FOUND or path == PROFILED_PATH)


def status_class(status: int, path: str) -> FaultClass | None:
    """The class of an HTTP status on `path`, None for a success."""
    if status in (401, 403):
        return "auth"
    if status == 404:
        # A stored response's 404 says the response is gone (deleted, expired, never stored):
        # the client's answer, the model as healthy as before.
        return "client_error" if path.startswith(STORED_RESPONSES) else "not_found"
    if status == 408:
        return "request_timeout"  # the upstream gave up waiting for the request: it did no work
    if status == 413:
        return "too_large"
    if status == 429:
        return "rate_limit"
    if status >= 500 or status == 424:
        # TGI answers 424 when the generation failed on its side (a shard's error, out of memory)
        return "server"
    if status >= 400:
        return "client_error"
    return None


def transport_class(exc: UpstreamError | TimeoutError) -> FaultClass:
    """The class of a transport error while sending a request and waiting for its answer."""
    if isinstance(exc, ConnectFailed):
        return "connect"  # the request never left (refused, DNS, connect or pool timeout, bad URL)
    if isinstance(exc, WriteFailed):
        return "write"  # the request did not arrive whole: the upstream cannot have acted on it
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, Disconnected):
        return "disconnect"  # the server closed the connection without a (complete, well-formed) answer
    return "read"


def describe(kind: FaultClass, model: str, status: int | None, path: str, base_url: str, *,
             disabling: bool) -> str:
    """What the client and the logs are told of a status fault: the gateway's words only.
    `disabling`: whether the forwarder that met it takes models out of routing (client traffic's);
    the profiling forwarder does not (a profiled model or a judge fails its job instead), so its
    faults must not say so."""
    if kind == "auth":
        refused = f"the upstream of model {model} refused the gateway's credentials (HTTP {status})"
        return f"{refused}; the model is taken out of routing" if disabling else refused
    if kind == "not_found":
        what = "the model" if path == PROFILED_PATH else f"the model or the endpoint {path}"
        return f"the upstream of model {model} does not know {what} (HTTP 404)"
    if kind == "no_endpoint" and path != PROFILED_PATH:
        return f"the upstream of model {model} does not serve {path} (HTTP 404)"
    if kind == "no_endpoint":
        hint = (": check it" if base_url.rstrip("/").endswith("/v1") else
                ", which likely lacks the /v1 under which vLLM, TGI, llama.cpp, Ollama and most OpenAI-compatible "
                "servers serve it")
        return (f"the upstream of model {model} serves no {path} at the model's base_url{hint} (HTTP 404 for the "
                f"URL's path, naming no model)")
    if kind in REFUSALS:
        return f"{REFUSALS[kind].format(model=model)} (HTTP {status})"
    if kind == "too_large":
        return f"the request is larger than the upstream of {model} takes (HTTP {status})"
    return f"HTTP {status} from {model}"


def fault_error(kind: FaultClass, detail: str, when: str) -> str:
    """The registry `error` of a model a fault disabled, with what the operator should fix: the
    model's base_url for `no_endpoint` (the upstream is fine, the address is not), else the
    upstream."""
    fix = ("fix the model's base_url (PATCH /admin/models/<name> {\"base_url\": ...})" if kind == "no_endpoint"
           else "fix the upstream")
    return (f"{FAULT_PREFIX}{kind}: {detail} at {when}; {fix}, then re-enable the model "
            f"(PATCH /admin/models/<name> {{\"enabled\": true}})")


def fault_of(error: str | None) -> FaultClass | None:
    """The fault class that disabled a model, from its registry `error`; None if no fault did."""
    if not error or not error.startswith(FAULT_PREFIX):
        return None
    kind = error[len(FAULT_PREFIX):].split(":", 1)[0]
    return kind if kind in POLICIES else None  # type: ignore[return-value]
