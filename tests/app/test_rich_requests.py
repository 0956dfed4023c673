"""The richer parts of the OpenAI API through the gateway, as applications use them: tool calls
and their results, agent loops, output limits. The real openai SDK against a real gateway in
front of the fault upstream (OpenAI's wire formats)."""
from __future__ import annotations

import httpx
import orjson
import pytest

from app.runtime.config import PriceIn
from tests.support.clients import client

# What the dear model costs per million input tokens, and the cheap one.
DEAR_INPUT, CHEAP_INPUT = 10.0, 0.1
TOOLS = [{"type": "function", "function": {"name": "read_log", "parameters": {"type": "object"}}}]
QUESTION = "Why did last night's backup fail?"


@pytest.fixture
def priced(make_gateway, fault_upstream, model_config):
    """Models priced by the token: `dear` (right 90% of the time, 10 per million input tokens) and
    `cheap` (60%, 0.1), answering nothing but text."""
    upstream, url = fault_upstream
    models = [model_config("dear", url, score=0.9).model_copy(update={"cost": PriceIn(input_per_mtok=DEAR_INPUT)}),
              model_config("cheap", url, score=0.6).model_copy(update={"cost": PriceIn(input_per_mtok=CHEAP_INPUT)})]
    with make_gateway(models=models) as gw:
        yield upstream, gw


def agent_turn(tool_output: str) -> list[dict]:
    """An agent loop's messages after a tool ran: the question, the tool call (no content), its result."""
    call = {"id": "call_1", "type": "function", "function": {"name": "read_log", "arguments": "{}"}}
    return [{"role": "developer", "content": "You are a terse SRE assistant."},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": tool_output}]


def test_an_agent_loops_expected_cost_counts_the_tool_results_it_sends(priced):
    # Routing reads the question, but the model is sent, and bills, the whole conversation: a
    # 200,000-character log is 50,000 input tokens, which the expected cost must price and routing
    # must weigh (0.5 at the dear model against its 0.3 of error rate saved, at λ = 0.4).
    upstream, gw = priced
    log = "2024-05-01 03:00:07 backup: rsync error 23, some files could not be transferred\n" * 2_500
    for model in ("dear", "uniroute:0.4"):
        raw = client(gw).chat.completions.with_raw_response.create(
            model=model, messages=agent_turn(log), tools=TOOLS)
        reply = raw.parse()
        answered_by = raw.headers["x-uniroute-model"]
        price = DEAR_INPUT if answered_by == "dear" else CHEAP_INPUT
        billed = reply.usage.prompt_tokens * price / 1e6  # the fake upstream counts every message's text
        assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(billed, rel=0.01), model
        assert upstream.received[-1].body["messages"][3]["content"] == log
    assert answered_by == "cheap"
    # A short conversation still goes to the better model: the question alone is cheap anywhere.
    short = client(gw).chat.completions.with_raw_response.create(
        model="uniroute:0.4", messages=agent_turn("backup.sh: disk full"), tools=TOOLS)
    assert short.headers["x-uniroute-model"] == "dear"


def test_a_responses_agent_loops_expected_cost_counts_its_function_call_outputs(priced):
    upstream, gw = priced
    log = "2024-05-01 03:00:07 backup: rsync error 23, some files could not be transferred\n" * 2_500
    # the model's earlier output sent back, as a client not storing responses does
    said = "Let me read the backup log."
    items = [{"role": "user", "content": QUESTION},
             {"type": "message", "role": "assistant", "status": "completed",
              "content": [{"type": "output_text", "text": said, "annotations": []}]},
             {"type": "function_call", "call_id": "call_1", "name": "read_log", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "call_1", "output": log}]
    tools = [{"type": "function", "name": "read_log", "parameters": {"type": "object"}}]
    raw = client(gw).responses.with_raw_response.create(
        model="uniroute:0.4", input=items, instructions="You are a terse SRE assistant.", tools=tools)
    assert raw.headers["x-uniroute-model"] == "cheap"
    chars = (len("You are a terse SRE assistant.") + len(QUESTION) + len(said) + len("{}") + len(log)
             + len(orjson.dumps(tools)))
    assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(chars / 4 * CHEAP_INPUT / 1e6, rel=1e-5)
    assert upstream.received[-1].body["input"] == items


def many_tools(count: int) -> list[dict]:
    """An agent's tool definitions, each with a described parameter schema, as MCP servers list them."""
    return [{"type": "function", "function": {
        "name": f"tool_{i}", "description": "Reads a page of the service's logs between two instants. " * 4,
        "parameters": {"type": "object", "properties": {
            "since": {"type": "string", "description": "ISO 8601 instant to read from"},
            "until": {"type": "string", "description": "ISO 8601 instant to read to"}}}}} for i in range(count)]


def test_the_tool_definitions_a_request_sends_are_in_its_expected_cost(priced):
    # The model reads every tool's definition as input, and bills it: an agent with 400 tools
    # sends about 150,000 characters of them with a one-line question (before: priced as the
    # question alone, 8 tokens, and routed as if that were all the dear model would bill).
    upstream, gw = priced
    tools = many_tools(400)
    messages = [{"role": "user", "content": QUESTION}]
    assert client(gw).chat.completions.with_raw_response.create(
        model="uniroute:0.4", messages=messages, tools=tools[:1]).headers["x-uniroute-model"] == "dear"
    raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0.4", messages=messages, tools=tools)
    assert raw.headers["x-uniroute-model"] == "cheap"
    chars = len(QUESTION) + len(orjson.dumps(tools))
    assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(chars / 4 * CHEAP_INPUT / 1e6, rel=1e-5)
    # chat's deprecated `functions` alike, for a named model
    functions = [t["function"] for t in tools]
    named = client(gw).chat.completions.with_raw_response.create(model="dear", messages=messages, functions=functions)
    chars = len(QUESTION) + len(orjson.dumps(functions))
    assert float(named.headers["x-uniroute-expected-cost"]) == pytest.approx(chars / 4 * DEAR_INPUT / 1e6, rel=1e-5)
    assert upstream.received[-1].body["functions"] == functions


def test_the_images_a_request_sends_are_in_its_expected_cost(priced):
    # OpenAI bills a "low" detail image 85 input tokens, any other by its size (765 tokens for
    # 1024x1024, which stands for every image: the gateway does not read it before routing).
    # Before, only the text was priced: a question about a page of screenshots cost 8 tokens.
    upstream, gw = priced
    image = "data:image/png;base64," + "iVBORw0KGgo" * 10
    parts = [{"type": "text", "text": QUESTION},
             {"type": "image_url", "image_url": {"url": image}},
             {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]
    raw = client(gw).chat.completions.with_raw_response.create(
        model="dear", messages=[{"role": "user", "content": parts}])
    tokens = len(QUESTION) / 4 + 765 + 85
    assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(tokens * DEAR_INPUT / 1e6, rel=1e-5)
    items = [{"role": "user", "content": [{"type": "input_text", "text": QUESTION},
                                          {"type": "input_image", "image_url": image, "detail": "low"}]}]
    raw = client(gw).responses.with_raw_response.create(model="dear", input=items)
    tokens = len(QUESTION) / 4 + 85
    assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(tokens * DEAR_INPUT / 1e6, rel=1e-5)


def test_a_completions_prompt_of_token_ids_is_priced_by_its_tokens(priced):
    # A named model is sent token ids as they are, one input token each: before, a prompt of
    # 4,000 of them was priced at 0 input tokens, as a prompt with no text.
    upstream, gw = priced
    for prompt, tokens in (([15496, 11, 995] * 1_000, 3_000), ([[15496, 11, 995]], 3)):
        raw = client(gw).completions.with_raw_response.create(model="dear", prompt=prompt, max_tokens=1)
        assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(tokens * DEAR_INPUT / 1e6, rel=1e-5)
        assert upstream.received[-1].body["prompt"] == prompt


# What the dear model costs per million output tokens, and the cheap one.
DEAR_OUTPUT, CHEAP_OUTPUT = 60.0, 0.6
LIMIT = 16  # the smallest max_output_tokens the Responses API takes


@pytest.fixture
def wordy(make_gateway, fault_upstream, model_config):
    """Models priced by their answers' tokens (256 of them expected, no profile having measured
    any): `dear` (right 90% of the time, 60 per million) and `cheap` (60%, 0.6)."""
    upstream, url = fault_upstream
    models = [model_config("dear", url, score=0.9).model_copy(update={"cost": PriceIn(output_per_mtok=DEAR_OUTPUT)}),
              model_config("cheap", url, score=0.6).model_copy(update={"cost": PriceIn(output_per_mtok=CHEAP_OUTPUT)})]
    with make_gateway(models=models) as gw:
        yield upstream, gw


def test_an_answers_token_limit_bounds_its_expected_cost(wordy):
    # A model is billed for no more tokens than the request lets it write (max_completion_tokens,
    # or the deprecated max_tokens, per chat choice; max_tokens for completions; max_output_tokens
    # for the Responses API). 256 expected tokens at the dear model cost 0.015, worth more than its
    # 0.3 of error rate saved at λ = 0.4; 16 cost 0.001, which is worth paying.
    upstream, gw = wordy
    ask = {
        "max_completion_tokens": lambda model, **extra: client(gw).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "Is this review positive? 'Loved it.'"}], **extra),
        "max_tokens": lambda model, **extra: client(gw).completions.with_raw_response.create(
            model=model, prompt="Is this review positive? 'Loved it.' Answer:", **extra),
        "max_output_tokens": lambda model, **extra: client(gw).responses.with_raw_response.create(
            model=model, input="Is this review positive? 'Loved it.'", **extra),
    }
    for field, create in ask.items():
        assert create("uniroute:0.4").headers["x-uniroute-model"] == "cheap", field
        for model in ("uniroute:0.4", "dear"):
            raw = create(model, **{field: LIMIT})
            assert raw.headers["x-uniroute-model"] == "dear", field
            assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(LIMIT * DEAR_OUTPUT / 1e6), field
            # chat's limit goes upstream as max_tokens, the name every server reads (app/upstream/parameters.py)
            assert upstream.received[-1].body[{"max_completion_tokens": "max_tokens"}.get(field, field)] == LIMIT
    # chat's deprecated max_tokens bounds it too, and max_completion_tokens wins over it
    for limits in ({"max_tokens": LIMIT}, {"max_tokens": 4096, "max_completion_tokens": LIMIT}):
        raw = ask["max_completion_tokens"]("uniroute:0.4", extra_body=limits)
        assert raw.headers["x-uniroute-model"] == "dear", limits
        assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(LIMIT * DEAR_OUTPUT / 1e6)


def test_every_answer_a_request_asks_for_is_in_its_expected_cost(wordy):
    # OpenAI bills the tokens of every choice (`n`), and of every completion `best_of` makes
    # server-side: 16 answers of 16 tokens at the dear model cost 0.015 again, not worth paying.
    upstream, gw = wordy
    prompt = "Is this review positive? 'Loved it.'"
    raw = client(gw).completions.with_raw_response.create(model="uniroute:0.4", prompt=prompt, max_tokens=LIMIT,
                                                          best_of=16)
    assert raw.headers["x-uniroute-model"] == "cheap"
    assert float(raw.headers["x-uniroute-expected-cost"]) == pytest.approx(16 * LIMIT * CHEAP_OUTPUT / 1e6)
    assert upstream.received[-1].body["best_of"] == 16
    named = client(gw).completions.with_raw_response.create(model="dear", prompt=prompt, max_tokens=LIMIT, best_of=16)
    assert float(named.headers["x-uniroute-expected-cost"]) == pytest.approx(16 * LIMIT * DEAR_OUTPUT / 1e6)
    # chat's n, as the dry run decides it (the fake upstream writes one answer per request)
    body = {"model": "uniroute:0.4", "messages": [{"role": "user", "content": prompt}], "max_completion_tokens": LIMIT}
    assert httpx.post(gw + "/v1/route", json=body, timeout=30).json()["model"] == "dear"
    dry = httpx.post(gw + "/v1/route", json={**body, "n": 16}, timeout=30).json()
    assert dry["model"] == "cheap"
    assert dry["expected_cost"] == pytest.approx(16 * LIMIT * CHEAP_OUTPUT / 1e6)
