"""The OpenAI request bodies as the gateway reads them: only the fields routing needs are
read (checked by hand when plain, else validated), everything else passes to the upstream untouched."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import orjson
from fastapi import Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)

from app.api.errors import APIError, validation_error
from app.errors import GatewayError
from app.routing.prompts import (
    NO_NEEDS,
    PromptSize,
    chat_needs,
    chat_prompt_size,
    chat_routing_text,
    completion_routing_text,
    responses_needs,
    responses_prompt_size,
    responses_routing_text,
    token_ids_chars,
    tools_chars,
)
from app.routing.service import RequestSize, policy_target
from app.runtime.config import Settings, TargetFields
from router_core.targets import RoutingTarget


class RoutingOptions(TargetFields):
    """The body's `uniroute` field: at most one target (cost_weight, budget, quality, or a named
    policy), and the models allowed."""

    policy: str | None = None
    models: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _policy_alone(self) -> "RoutingOptions":
        if self.policy is not None and self.target() is not None:
            raise ValueError(f"give one target, not policy and {self.target().kind}")
        return self

    def routing_target(self, settings: Settings) -> RoutingTarget | None:
        """The target asked for, if any (a policy's is looked up in the config)."""
        if self.policy is not None:
            return policy_target(self.policy, settings, "uniroute.policy")
        return self.target()


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list | None = None


def _plain_content(content: object) -> bool:
    return content is None or type(content) in (str, list)


def _positive_int(value: object) -> int | None:
    """A limit on the answer's tokens, or a count of answers, as a body gives it: a positive
    whole number, else None (a bad one is the upstream's to refuse)."""
    return value if type(value) is int and value > 0 else None


class RoutedBody(BaseModel):
    """What the gateway reads of a request it may route: the model asked for, whether to stream,
    the `uniroute` options, and (per kind, `text_of`) the prompt's text.

    Validating a whole body costs more than routing a short prompt's request does otherwise, so
    `plain` first checks by hand whether the body is a usual one that surely validates with
    nothing converted; only the others are validated (read_routed)."""

    model_config = ConfigDict(extra="allow")
    # The parameter that holds the prompt, which an error about the prompt names.
    prompt_param: ClassVar[str]
    model: str
    stream: StrictBool | None = False  # null is the spec's default: not streamed
    uniroute: RoutingOptions | None = None

    @classmethod
    def plain(cls, body: dict) -> bool:
        """Whether `body` validates as it is: `model` a string, `stream` absent, null or a
        boolean, no `uniroute` options, and the kind's prompt fields (`plain_prompt`) plain."""
        stream = body.get("stream")
        return (type(body.get("model")) is str and (stream is None or type(stream) is bool)
                and body.get("uniroute") is None and cls.plain_prompt(body))

    @classmethod
    def plain_prompt(cls, body: dict) -> bool:
        raise NotImplementedError

    @classmethod
    def text_of(cls, fields: dict, routed: bool) -> str:
        """The text routing reads (and the expected cost counts) of a valid body's `fields`;
        `routed` when a router name was asked for."""
        raise NotImplementedError

    @classmethod
    def prompt_of(cls, fields: dict, text: str) -> PromptSize:
        """What a valid body's `fields` send the model, whose characters its input tokens are
        estimated from: its routing text (`text`, as `text_of` read it) by default, every turn
        for a conversation."""
        return PromptSize(len(text))

    @classmethod
    def needs_of(cls, fields: dict, images: bool) -> frozenset[str]:
        """The capabilities a valid body's `fields` need of the model (`images`: its prompt holds
        an image, as `prompt_of` found); none by default."""
        return NO_NEEDS

    @classmethod
    def output_limit_of(cls, fields: dict) -> int | None:
        """The most tokens the answer may have (per choice), as the kind's body field says."""
        raise NotImplementedError

    @classmethod
    def choices_of(cls, fields: dict) -> int:
        """How many answers the model writes, each billed (`n`; one, as the Responses API always)."""
        return 1


class ChatBody(RoutedBody):
    """A chat completions request."""

    prompt_param = "messages"
    messages: list[Message] = Field(min_length=1)

    @classmethod
    def plain_prompt(cls, body: dict) -> bool:
        messages = body.get("messages")
        return (type(messages) is list and len(messages) > 0
                and all(type(m) is dict and type(m.get("role")) is str and _plain_content(m.get("content"))
                        for m in messages))

    @classmethod
    def text_of(cls, fields: dict, routed: bool) -> str:
        return chat_routing_text(fields["messages"])

    @classmethod
    def prompt_of(cls, fields: dict, text: str) -> PromptSize:
        size = chat_prompt_size(fields["messages"])
        size.chars += tools_chars(fields)
        return size

    @classmethod
    def needs_of(cls, fields: dict, images: bool) -> frozenset[str]:
        return chat_needs(fields, images)

    @classmethod
    def output_limit_of(cls, fields: dict) -> int | None:
        # max_tokens is deprecated for max_completion_tokens, which wins when both are given (as
        # in vLLM); reasoning tokens count against it, so it bounds what is billed.
        return _positive_int(fields.get("max_completion_tokens")) or _positive_int(fields.get("max_tokens"))

    @classmethod
    def choices_of(cls, fields: dict) -> int:
        return _positive_int(fields.get("n")) or 1


class CompletionBody(RoutedBody):
    """A completions request."""

    prompt_param = "prompt"
    prompt: str | list

    @classmethod
    def plain_prompt(cls, body: dict) -> bool:
        return type(body.get("prompt")) in (str, list)

    @classmethod
    def text_of(cls, fields: dict, routed: bool) -> str:
        # token ids have no text: only a named model takes them
        try:
            return completion_routing_text(fields["prompt"])
        except GatewayError:
            if routed:
                raise
            return ""

    @classmethod
    def prompt_of(cls, fields: dict, text: str) -> PromptSize:
        # token ids have no text (`text` is ""), but the model is sent and bills every one
        return PromptSize(len(text) or token_ids_chars(fields["prompt"]))

    @classmethod
    def output_limit_of(cls, fields: dict) -> int | None:
        return _positive_int(fields.get("max_tokens"))

    @classmethod
    def choices_of(cls, fields: dict) -> int:
        # best_of answers are written (and billed) server-side, of which n are returned
        return max(_positive_int(fields.get("n")) or 1, _positive_int(fields.get("best_of")) or 1)


class ResponsesBody(RoutedBody):
    """A Responses API request (`POST /v1/responses`), routed from its instructions and input.
    OpenAI's `input` is optional: a request may carry its prompt in `instructions` alone."""

    prompt_param = "input"
    input: str | list | None = None
    instructions: str | None = None

    @classmethod
    def plain_prompt(cls, body: dict) -> bool:
        instructions, input = body.get("instructions"), body.get("input")
        return (input is None or type(input) in (str, list)) and (instructions is None or type(instructions) is str)

    @classmethod
    def text_of(cls, fields: dict, routed: bool) -> str:
        return responses_routing_text(fields.get("input"), fields.get("instructions"))

    @classmethod
    def prompt_of(cls, fields: dict, text: str) -> PromptSize:
        size = responses_prompt_size(fields.get("input"), fields.get("instructions"))
        size.chars += tools_chars(fields)
        return size

    @classmethod
    def needs_of(cls, fields: dict, images: bool) -> frozenset[str]:
        return responses_needs(fields, images)

    @classmethod
    def output_limit_of(cls, fields: dict) -> int | None:
        return _positive_int(fields.get("max_output_tokens"))


# The routed kinds by the field that holds a body's prompt, in the order /v1/route tries them
# (it is shown a body of any kind, and a chat body is chat whatever else it carries). `prompt`
# comes last: a Responses API body may name a stored prompt template in it.
_KINDS_BY_PROMPT: dict[str, type[RoutedBody]] = {"messages": ChatBody, "input": ResponsesBody,
                                                 "instructions": ResponsesBody, "prompt": CompletionBody}


def kind_of(body: dict) -> type[RoutedBody]:
    """The kind of routed request `body` is, told by its prompt's field; a 400 naming the
    fields it may have when it has none of them."""
    for field, kind in _KINDS_BY_PROMPT.items():
        if field in body:
            # A stored prompt template (`{"id": ...}`) alone: a Responses API body, not a completion.
            return ResponsesBody if field == "prompt" and isinstance(body[field], dict) else kind
    raise APIError(400, "the body has no prompt: give `messages` (chat completions), `prompt` (completions) "
                        "or `input` / `instructions` (Responses API)", code="missing_required_parameter")


@dataclass(frozen=True)
class RoutedRequest:
    """A routed request as the gateway reads it: `fields` are its body's (or their validated
    values), as `kind.text_of` reads them."""

    kind: type[RoutedBody]
    model: str
    stream: bool
    options: RoutingOptions | None
    fields: dict

    def routing_text(self, routed: bool) -> str:
        """The text routing reads; `routed` when a router name was asked for."""
        return self.kind.text_of(self.fields, routed)

    def size(self, text: str) -> RequestSize:
        """What the request's expected cost is priced by: the characters of text it sends the
        model (`text`: its routing text, read once), the most tokens each answer may have and
        how many answers it asks for; and what it needs of the model."""
        prompt = self.kind.prompt_of(self.fields, text)
        return RequestSize(prompt.chars, self.kind.output_limit_of(self.fields), self.kind.choices_of(self.fields),
                           self.kind.needs_of(self.fields, prompt.images))


def read_routed(kind: type[RoutedBody], body: dict) -> RoutedRequest:
    """The request of `kind` in `body`: a plain body as it is, any other validated (a 400 naming
    the offending parameter when it is not valid)."""
    if kind.plain(body):
        return RoutedRequest(kind, body["model"], bool(body.get("stream")), None, body)
    parsed = validate(kind, body)
    return RoutedRequest(kind, parsed.model, bool(parsed.stream), parsed.uniroute, parsed.model_dump())


class EmbeddingsBody(BaseModel):
    """What the gateway reads of an embeddings request: the model it names."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list


# orjson reads JSON nested up to 1024 levels but writes only 254: a deeper body would parse, then
# fail as it is sent upstream (a 500). More than any real request nests, well below orjson's limit.
MAX_BODY_DEPTH = 128


def _nests_deeper(value: object, levels: int) -> bool:
    """Whether `value` has objects or arrays nested more than `levels` deep (itself one level)."""
    if type(value) is dict:
        items = value.values()
    elif type(value) is list:
        items = value
    else:
        return False
    if levels <= 0:
        return True
    return any(_nests_deeper(item, levels - 1) for item in items if type(item) in (dict, list))


async def read_body(request: Request) -> dict:
    """The request's JSON object, or a 400 saying what is wrong with it."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    # Counting brackets is cheap and lets almost every body skip the walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_BODY_DEPTH and _nests_deeper(body, MAX_BODY_DEPTH):
        raise APIError(400, f"the request body nests objects and arrays more than {MAX_BODY_DEPTH} levels deep",
                       code="body_too_deep")
    return body


def validate(model: type[BaseModel], body: dict) -> BaseModel:
    """Validate the fields the gateway reads; errors name the offending parameter."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
