"""The replay upstream over a real socket: RouterBench's recorded answers in OpenAI's wire format."""
from __future__ import annotations

import argparse
import ast
import csv
import sys
import time
from collections import Counter
from functools import cache

import httpx
import openai
import orjson
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as ResponsesResponse

from app.cli import replay_upstream as replay_command
from app.demo import ROUTERBENCH_DIR
from app.demo.replay_upstream import (
    LATENCY,
    STAND_IN_MARK,
    ReplayBook,
    approx_tokens,
    create_replay_app,
    split_pieces,
)
from router_core.datasets import load_routerbench_responses
from tests.support.servers import serve

ROUTERBENCH_MODELS = {
    "gpt-4-1106-preview", "gpt-3.5-turbo-1106", "claude-v2", "claude-v1", "claude-instant-v1",
    "meta/llama-2-70b-chat", "meta/code-llama-instruct-34b-chat", "zero-one-ai/Yi-34B-Chat",
    "mistralai/mixtral-8x7b-chat", "WizardLM/WizardLM-13B-V1.2", "mistralai/mistral-7b-chat",
}


@cache
def csv_rows(name: str) -> list[dict[str, str]]:
    """The rows of one vendored CSV, read independently of the loader under test."""
    csv.field_size_limit(sys.maxsize)
    with open(ROUTERBENCH_DIR / f"{name}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def joined(literal: str) -> str:
    return "\n".join(ast.literal_eval(literal))


@cache
def prompt_counts() -> Counter[str]:
    files = [f"{t}_{s}" for t in ("arc_challenge", "winograde", "mbpp") for s in ("train", "test")]
    return Counter(joined(row["prompt"]) for f in files for row in csv_rows(f))


def recorded(name: str, index: int) -> tuple[str, dict[str, str]]:
    """The joined prompt of a row whose prompt occurs once in the subset, and its answers per model."""
    unique = [row for row in csv_rows(name) if prompt_counts()[joined(row["prompt"])] == 1]
    row = unique[index]
    answers = {m: joined(row[f"{m}|model_response"]) for m in ROUTERBENCH_MODELS}
    return joined(row["prompt"]), answers


@pytest.fixture(scope="module")
def responses() -> dict[str, dict[str, str]]:
    return load_routerbench_responses(ROUTERBENCH_DIR)


@pytest.fixture(scope="module")
def base_url(responses):
    with serve(create_replay_app(responses, latency_scale=0)) as url:
        yield url


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sse_payloads(body: str) -> list[str]:
    """The data of each SSE event, checking the `data: ...\\n\\n` framing on the way."""
    assert body.endswith("\n\n")
    events = body[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


# --- recorded answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["arc_challenge_train", "winograde_test", "mbpp_test", "mbpp_train"])
def test_chat_returns_the_recorded_answer_of_every_model(client: openai.OpenAI, name: str) -> None:
    prompt, answers = recorded(name, 3)
    for model, answer in answers.items():
        reply = client.chat.completions.create(model=model, messages=user(prompt))
        assert reply.choices[0].message.content == answer, model
        assert reply.model == model and reply.choices[0].finish_reason == "stop"


def test_completions_endpoint_returns_the_recorded_answer(client: openai.OpenAI) -> None:
    prompt, answers = recorded("arc_challenge_test", 10)
    reply = client.completions.create(model="claude-v2", prompt=prompt)
    assert reply.choices[0].text == answers["claude-v2"] and reply.object == "text_completion"


def test_stream_reassembles_the_recorded_answer_word_by_word(client: openai.OpenAI) -> None:
    prompt, answers = recorded("mbpp_train", 0)  # code: many words, newlines, indentation
    model = "gpt-4-1106-preview"
    chunks = list(client.chat.completions.create(model=model, messages=user(prompt), stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answers[model]
    assert len(chunks) > 10 and chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == approx_tokens(answers[model])
    assert usage.prompt_tokens == approx_tokens(prompt) and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_async_sdk_gets_recorded_answers_streamed_and_not(aclient: openai.AsyncOpenAI) -> None:
    prompt, answers = recorded("winograde_train", 5)
    model = "meta/llama-2-70b-chat"
    reply = await aclient.chat.completions.create(model=model, messages=user(prompt))
    assert reply.choices[0].message.content == answers[model]
    stream = await aclient.completions.create(model=model, prompt=prompt, stream=True)
    pieces = [c.choices[0].text async for c in stream]
    assert "".join(pieces) == answers[model]


def test_prompt_matches_after_whitespace_normalisation(client: openai.OpenAI) -> None:
    prompt, answers = recorded("arc_challenge_train", 7)
    mangled = "  " + prompt.replace("\n", " \n\n ").replace(" ", "  ") + "\n"
    reply = client.chat.completions.create(model="mistralai/mixtral-8x7b-chat", messages=user(mangled))
    assert reply.choices[0].message.content == answers["mistralai/mixtral-8x7b-chat"]


def test_prompt_is_the_last_user_message_with_text_parts_joined(client: openai.OpenAI) -> None:
    prompt, answers = recorded("winograde_test", 2)
    lines = prompt.split("\n")
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": [{"type": "text", "text": lines[0]},
                                     {"type": "text", "text": "\n".join(lines[1:])}]},
    ]
    reply = client.chat.completions.create(model="claude-instant-v1", messages=messages)
    assert reply.choices[0].message.content == answers["claude-instant-v1"]


def test_unknown_prompt_gets_a_marked_stand_in(client: openai.OpenAI) -> None:
    model = "zero-one-ai/Yi-34B-Chat"
    reply = client.chat.completions.create(model=model, messages=user("What is the capital of Mars?"))
    assert reply.choices[0].message.content.startswith(STAND_IN_MARK.format(model=model))
    chunks = list(client.completions.create(model=model, prompt="no such prompt", stream=True))
    assert "".join(c.choices[0].text for c in chunks).startswith(STAND_IN_MARK.format(model=model))


def test_responses_api_returns_the_recorded_answer_streamed_and_not(client: openai.OpenAI) -> None:
    # The demo's gateway forwards /v1/responses; without this route every model 404'd and a
    # client of the Responses API got a 502.
    prompt, answers = recorded("arc_challenge_test", 4)
    model = "gpt-3.5-turbo-1106"
    reply = client.responses.create(model=model, input=prompt, instructions="Answer with a letter.")
    assert reply.output_text == answers[model] and reply.status == "completed" and reply.model == model
    assert reply.usage.output_tokens == approx_tokens(answers[model])
    assert reply.usage.input_tokens == approx_tokens("Answer with a letter." + prompt)
    items = [{"role": "user", "content": "an earlier question"}, {"role": "assistant", "content": "an answer"},
             {"role": "user", "content": [{"type": "input_text", "text": prompt}]}]
    events = list(client.responses.create(model=model, input=items, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == answers[model]
    assert events[-1].response.output_text == answers[model]
    with client.responses.stream(model=model, input=prompt) as stream:  # the SDK's accumulating helper
        assert stream.get_final_response().output_text == answers[model]


def test_responses_api_max_output_tokens_cuts_the_answer_as_incomplete(client: openai.OpenAI) -> None:
    prompt, answers = recorded("mbpp_test", 1)
    reply = client.responses.create(model="claude-v1", input=prompt, max_output_tokens=5)
    assert reply.output_text == answers["claude-v1"][:20]
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    events = list(client.responses.create(model="claude-v1", input=prompt, max_output_tokens=5, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.output_text == answers["claude-v1"][:20]


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI) -> None:
    prompt, answers = recorded("mbpp_test", 1)
    assert len(answers["claude-v1"]) > 20
    reply = client.chat.completions.create(model="claude-v1", messages=user(prompt), max_tokens=5)
    assert reply.choices[0].message.content == answers["claude-v1"][:20]
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5


def test_an_answer_ends_before_its_first_stop_sequence_streamed_or_not(client: openai.OpenAI) -> None:
    prompt, answers = recorded("mbpp_test", 1)
    full = answers["claude-v1"]
    words = full.split()
    late, early = words[len(words) // 2], words[2]  # the stop that comes first in the answer wins
    expected = full[:min(full.find(late), full.find(early))]
    reply = client.chat.completions.create(model="claude-v1", messages=user(prompt), stop=[late, early])
    assert reply.choices[0].message.content == expected and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == approx_tokens(expected)
    text = client.completions.create(model="claude-v1", prompt=prompt, stop=early)
    assert text.choices[0].text == expected
    chunks = client.chat.completions.create(model="claude-v1", messages=user(prompt), stop=early, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    unmatched = client.chat.completions.create(model="claude-v1", messages=user(prompt), stop=["\x00never"])
    assert unmatched.choices[0].message.content == full


# --- wire format --------------------------------------------------------------------------------


def test_raw_responses_validate_strictly_against_openai_types(base_url: str) -> None:
    prompt, _ = recorded("arc_challenge_test", 0)
    url = base_url + "/v1"
    chat = httpx.post(url + "/chat/completions", json={"model": "claude-v2", "messages": user(prompt)})
    text = httpx.post(url + "/completions", json={"model": "claude-v2", "prompt": prompt})
    answered = httpx.post(url + "/responses", json={"model": "claude-v2", "input": prompt})
    assert chat.headers["content-type"] == "application/json"
    assert ChatCompletion.model_validate(chat.json()).object == "chat.completion"
    assert Completion.model_validate(text.json()).object == "text_completion"
    assert ResponsesResponse.model_validate(answered.json()).object == "response"

    streamed = httpx.post(url + "/chat/completions", json={"model": "claude-v2", "messages": user(prompt),
                                                           "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    *events, done = sse_payloads(streamed.text)
    assert done == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(e)) for e in events]
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].usage is not None


def test_stream_without_include_usage_has_no_usage_field(base_url: str) -> None:
    prompt, _ = recorded("arc_challenge_test", 0)
    body = httpx.post(base_url + "/v1/completions",
                      json={"model": "claude-v2", "prompt": prompt, "stream": True}).text
    *events, done = sse_payloads(body)
    chunks = [orjson.loads(e) for e in events]
    assert done == "[DONE]" and all("usage" not in c for c in chunks)
    assert {c["object"] for c in chunks} == {"text_completion"}
    # As OpenAI sends them: finish_reason null until the last chunk (the SDK's type, which
    # also serves streams, only admits the final value, so only the last chunk validates strictly).
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert Completion.model_validate(chunks[-1]).choices[0].finish_reason == "stop"


def test_unknown_model_is_a_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-5", messages=user("hi"))
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_models_endpoint_lists_the_eleven_routerbench_models(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == ROUTERBENCH_MODELS
    assert client.models.retrieve("meta/llama-2-70b-chat").id == "meta/llama-2-70b-chat"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "claude-v2", "messages": [{"role": "system", "content": "no user turn"}]},
        {"model": "claude-v2", "messages": user("hi"), "n": 2},
        {"model": "claude-v2"},
        {"model": "claude-v2", "messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]},
    ],
)
def test_malformed_requests_get_an_openai_400(base_url: str, body: dict) -> None:
    response = httpx.post(base_url + "/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("body", [
    {"model": "claude-v2", "input": [{"role": "system", "content": "no user turn"}]},
    {"model": "claude-v2"},
    {"model": "claude-v2", "input": "hi", "max_output_tokens": 0},
])
def test_malformed_responses_requests_get_an_openai_400(base_url: str, body: dict) -> None:
    response = httpx.post(base_url + "/v1/responses", json=body)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


# --- latency ------------------------------------------------------------------------------------


def test_latency_follows_the_table_so_bigger_models_answer_later(responses) -> None:
    prompt, answers = recorded("arc_challenge_test", 4)
    scale = 0.5
    with serve(create_replay_app(responses, latency_scale=scale)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
        elapsed = {}
        for model in ("gpt-4-1106-preview", "mistralai/mistral-7b-chat"):
            start = time.perf_counter()
            client.chat.completions.create(model=model, messages=user(prompt))
            elapsed[model] = time.perf_counter() - start
            lat = LATENCY[model]
            expected = scale * (lat.first_token_s + lat.per_token_s * approx_tokens(answers[model]))
            # asyncio's timers may fire a hair early; the bound is loose on the slow side only.
            assert 0.95 * expected <= elapsed[model] < expected + 5.0
        start = time.perf_counter()
        first = next(iter(client.chat.completions.create(model="claude-v2", messages=user(prompt), stream=True)))
        assert time.perf_counter() - start >= 0.95 * scale * LATENCY["claude-v2"].first_token_s
        assert first.choices[0].delta.role == "assistant"
    assert elapsed["gpt-4-1106-preview"] > elapsed["mistralai/mistral-7b-chat"]


def test_negative_latency_scale_is_rejected() -> None:
    with pytest.raises(ValueError):
        create_replay_app({}, latency_scale=-1)


# --- helpers and CLI ----------------------------------------------------------------------------


def test_split_pieces_rejoin_exactly() -> None:
    text = "  def f(x):\n    return x  \n\n"
    assert "".join(split_pieces(text)) == text and split_pieces("") == []
    assert split_pieces("a b") == ["a", " b"]


def test_replay_book_falls_back_to_the_normalised_prompt_only_for_known_prompts() -> None:
    book = ReplayBook({"m": {"a  b\nc": "1"}, "n": {"x": "2"}})
    assert book.lookup("m", "a b c") == "1"
    assert book.lookup("n", "a b c") is None and book.lookup("m", "x") is None


def run_command(argv: list[str]) -> int:
    """`uniroute <argv>` with only the replay-upstream subcommand registered."""
    parser = argparse.ArgumentParser(prog="uniroute")
    replay_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_help_says_it_is_a_demo_tool_not_an_llm(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_command(["replay-upstream", "--help"])
    assert "NOT AN LLM" in capsys.readouterr().out


def test_cli_rejects_a_negative_latency_scale(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_command(["replay-upstream", "--latency-scale", "-1"])
    assert "must be >= 0" in capsys.readouterr().err


def test_cli_rejects_a_missing_data_directory(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert run_command(["replay-upstream", "--data", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err
