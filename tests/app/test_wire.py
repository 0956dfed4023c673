"""The hand check of plain request bodies (app/api/wire.py) agrees with pydantic's validation:
every body it lets through validates, to the same model, stream flag, routing text and prompt size."""
from __future__ import annotations

import pytest

from app.api.errors import APIError
from app.api.wire import (
    ChatBody,
    CompletionBody,
    ResponsesBody,
    RoutedBody,
    read_routed,
    validate,
)
from app.routing.service import RequestSize

PARTS = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]
BODIES: list[tuple[type[RoutedBody], dict]] = [
    (ChatBody, {"model": "uniroute", "messages": [{"role": "user", "content": "hi"}]}),
    (ChatBody, {"model": "m", "stream": True, "messages": [{"role": "system", "content": "be brief"},
                                                             {"role": "user", "content": PARTS, "name": "u"}]}),
    (ChatBody, {"model": "m", "stream": None, "messages": [{"role": "assistant"}, {"role": "user", "content": None}]}),
    (ChatBody, {"model": "m", "uniroute": None, "messages": [{"role": "user", "content": "x"}], "temperature": 0}),
    (CompletionBody, {"model": "uniroute", "prompt": "say hi", "stream": False}),
    (CompletionBody, {"model": "uniroute", "prompt": ["a", "b"]}),
    (CompletionBody, {"model": "named", "prompt": [1, 2, 3]}),
    (ResponsesBody, {"model": "uniroute", "input": "hi", "instructions": "be brief"}),
    (ResponsesBody, {"model": "uniroute", "input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]}]}),
    (ResponsesBody, {"model": "uniroute", "instructions": "be brief"}),
    # not plain: validated (the options, a stream flag that is not a boolean, a bad message)
    (ChatBody, {"model": "uniroute", "uniroute": {"cost_weight": 0.5}, "messages": [{"role": "user", "content": "x"}]}),
    (ChatBody, {"model": "m", "stream": 1, "messages": [{"role": "user", "content": "x"}]}),
    (ChatBody, {"model": "m", "messages": [{"role": "user", "content": {"text": "x"}}]}),
    (ChatBody, {"model": "m", "messages": [{"content": "no role"}]}),
    (ChatBody, {"model": "m", "messages": []}),
    (ChatBody, {"model": 42, "messages": [{"role": "user", "content": "x"}]}),
    (ResponsesBody, {"model": "m", "input": "x", "instructions": 3}),
]


@pytest.mark.parametrize("kind,body", BODIES)
def test_a_plain_body_reads_as_its_validation_and_any_other_is_validated(kind, body):
    try:
        parsed = validate(kind, body)
    except APIError as exc:
        assert not kind.plain(body)
        with pytest.raises(APIError) as raised:
            read_routed(kind, body)
        assert raised.value.message == exc.message and raised.value.param == exc.param
        return
    read = read_routed(kind, body)
    assert (read.model, read.stream, read.options) == (parsed.model, bool(parsed.stream), parsed.uniroute)
    fields = parsed.model_dump()
    for routed in (False, True):
        try:
            expected = kind.text_of(fields, routed)
        except Exception as exc:  # a token-id prompt cannot be routed: both say so alike
            with pytest.raises(type(exc)):
                read.routing_text(routed)
            continue
        assert read.routing_text(routed) == expected
        prompt = kind.prompt_of(fields, expected)
        assert read.size(expected) == RequestSize(prompt.chars, kind.output_limit_of(fields), kind.choices_of(fields),
                                                kind.needs_of(fields, prompt.images))


def test_the_usual_bodies_are_plain_and_skip_validation():
    assert all(kind.plain(body) for kind, body in BODIES[:10])
    assert not any(kind.plain(body) for kind, body in BODIES[10:])
