"""The fault-injecting upstream and `serve`, driven over real sockets by the openai SDK and httpx."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import httpx
import openai
import orjson
import pytest
from fastapi import FastAPI
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.support.fault_upstream import (
    Fault,
    FaultUpstream,
    closed_port,
    parse_fault,
    split_model,
)
from tests.support.servers import ServerStartError, serve

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> FaultUpstream:
    return FaultUpstream(models=["m1", "m2"])


@pytest.fixture(scope="module")
def base_url(upstream: FaultUpstream):
    with serve(upstream.app) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh(upstream: FaultUpstream) -> None:
    upstream.reset()


def post_ignoring_errors(url: str, body: dict) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json=body, timeout=60)


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# --- healthy answers ----------------------------------------------------------------------------


def test_healthy_chat_answer_names_the_requested_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m1", messages=HI)
    assert reply.choices[0].message.content == "answer from m1"
    assert reply.model == "m1" and reply.choices[0].finish_reason == "stop"


def test_healthy_raw_bodies_validate_strictly_against_openai_types(base_url: str) -> None:
    chat = httpx.post(base_url + "/v1/chat/completions", json={"model": "m1", "messages": HI})
    text = httpx.post(base_url + "/v1/completions", json={"model": "m1", "prompt": "hi"})
    assert ChatCompletion.model_validate(chat.json()).usage.total_tokens > 0
    assert Completion.model_validate(text.json()).choices[0].text == "answer from m1"


async def test_healthy_async_stream_ends_with_usage_and_done(aclient: openai.AsyncOpenAI, base_url: str) -> None:
    stream = await aclient.chat.completions.create(model="m2", messages=HI, stream=True,
                                                   stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer from m2"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4  # ceil(14 / 4)
    async with httpx.AsyncClient() as raw:
        body = (await raw.post(base_url + "/v1/chat/completions",
                               json={"model": "m2", "messages": HI, "stream": True})).text
    assert body.endswith("data: [DONE]\n\n")


def test_a_stored_response_is_retrieved_listed_refused_a_cancel_and_deleted(client: openai.OpenAI) -> None:
    made = client.responses.create(model="m1", input=[{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "hello"},
                                                       {"role": "user", "content": "and?"}])
    assert client.responses.retrieve(made.id).output_text == "answer from m1"
    items = client.responses.input_items.list(made.id, order="asc", limit=2)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "hi"),
                                                                      ("message", "assistant", "hello")]
    assert items.has_more and items.first_id == items.data[0].id and items.last_id == items.data[1].id
    rest = client.responses.input_items.list(made.id, order="asc", after=items.last_id)
    assert [i.content[0].text for i in rest.data] == ["and?"] and not rest.has_more
    assert [i.content[0].text for i in client.responses.input_items.list(made.id).data] == ["and?", "hello", "hi"]
    with pytest.raises(openai.BadRequestError, match="synchronous"):
        client.responses.cancel(made.id)
    deleted = client.responses.delete(made.id)
    assert deleted is None  # the SDK reads no body; OpenAI's shape is checked below
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(made.id)
    assert gone.value.body["message"] == f"Response with id '{made.id}' not found."


def test_a_deleted_response_is_answered_in_openais_shape_and_unstored_ones_are_not_kept(
        client: openai.OpenAI, base_url: str, upstream: FaultUpstream) -> None:
    made = client.responses.create(model="m1", input="hi")
    r = httpx.delete(f"{base_url}/v1/responses/{made.id}", timeout=10)
    assert r.json() == {"id": made.id, "object": "response.deleted", "deleted": True}
    unstored = client.responses.create(model="m1", input="hi", store=False)
    streamed = [e for e in client.responses.create(model="m1", input="hi", stream=True)][-1].response
    assert list(upstream.stored) == [streamed.id] and unstored.id not in upstream.stored
    assert client.responses.retrieve(streamed.id).output_text == "answer from m1"


def test_models_endpoint_lists_the_configured_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["m1", "m2"]


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (429, openai.RateLimitError, "requests"),
        (500, openai.InternalServerError, "server_error"),
        (502, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
def test_status_fault_arrives_with_openai_error_body(
    client: openai.OpenAI, status: int, error_class: type[openai.APIStatusError], error_type: str
) -> None:
    with pytest.raises(error_class) as caught:
        client.chat.completions.create(model=f"m1:status={status}", messages=HI)
    assert caught.value.status_code == status
    assert caught.value.body["type"] == error_type and "injected fault" in caught.value.body["message"]


def test_status_fault_applies_to_streamed_requests_too(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m1:status=429", messages=HI, stream=True)


def test_fail_first_fails_exactly_n_requests_then_succeeds(client: openai.OpenAI, upstream: FaultUpstream) -> None:
    model = "m1:fail_first=2,status=500"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.completions.create(model=model, prompt="hi")
    assert client.completions.create(model=model, prompt="hi").choices[0].text == f"answer from {model}"
    assert upstream.calls[model] == 3


def test_fail_first_defaults_to_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m1:fail_first=1", messages=HI)
    assert caught.value.status_code == 503


def test_delay_holds_back_the_first_byte(base_url: str) -> None:
    start = time.perf_counter()
    with httpx.stream("POST", base_url + "/v1/chat/completions",
                      json={"model": "m1:delay=0.4", "messages": HI, "stream": True}) as response:
        headers_after = time.perf_counter() - start
        assert response.status_code == 200
    assert 0.4 <= headers_after < 5.0


async def test_delayed_model_answers_after_a_healthy_one_sent_later(aclient: openai.AsyncOpenAI) -> None:
    finished: list[str] = []

    async def ask(model: str, wait_s: float) -> None:
        await asyncio.sleep(wait_s)
        await aclient.chat.completions.create(model=model, messages=HI)
        finished.append(model)

    await asyncio.gather(ask("m1:delay=0.5", 0.0), ask("m2", 0.1))
    assert finished == ["m2", "m1:delay=0.5"]


def test_cut_stream_is_an_error_after_exactly_n_chunks(client: openai.OpenAI) -> None:
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="m1:cut=2", messages=HI, stream=True):
            received.append(chunk)
    # The role chunk, then the first word; never the finish chunk.
    assert len(received) == 2 and received[1].choices[0].delta.content == "answer"


async def test_cut_stream_is_an_error_for_the_async_sdk(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.completions.create(model="m1:cut=1", prompt="hi", stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk.choices[0].text)
    assert received == ["answer"]


def test_cut_stream_drops_the_tcp_connection_without_done(base_url: str) -> None:
    got = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", base_url + "/v1/chat/completions",
                          json={"model": "m1:cut=3", "messages": HI, "stream": True}) as response:
            for part in response.iter_bytes():
                got += part
    events = [e for e in got.split(b"\n\n") if e]
    assert len(events) == 3 and b"[DONE]" not in got
    assert all(ChatCompletionChunk.model_validate(orjson.loads(e.removeprefix(b"data: "))) for e in events)


def test_cut_zero_drops_the_connection_before_any_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="m1:cut=0", messages=HI, stream=True)
    with pytest.raises(openai.APIConnectionError):
        next(iter(stream))


def test_cut_non_streamed_body_is_a_connection_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m1:cut=1", messages=HI)


def test_a_failing_status_with_cut_breaks_its_error_body_mid_way(base_url: str) -> None:
    with httpx.stream("POST", base_url + "/v1/chat/completions",
                      json={"model": "m1:status=503,retry_after=7,cut=1", "messages": HI}) as response:
        assert response.status_code == 503 and response.headers["retry-after"] == "7"
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()


def test_bad_json_body_cannot_be_parsed(client: openai.OpenAI, base_url: str) -> None:
    response = httpx.post(base_url + "/v1/chat/completions", json={"model": "m1:bad_json", "messages": HI})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        response.json()
    with pytest.raises(ValueError):
        client.chat.completions.create(model="m1:bad_json", messages=HI)


def test_bad_json_stream_event_cannot_be_parsed(client: openai.OpenAI) -> None:
    with pytest.raises(ValueError):
        list(client.chat.completions.create(model="m1:bad_json", messages=HI, stream=True))


def test_connection_to_closed_port_is_refused() -> None:
    port = closed_port()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models")
    refused = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        refused.chat.completions.create(model="m1", messages=HI)


def test_malformed_fault_directive_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m1:explode", messages=HI)
    assert "bad fault directive 'explode'" in caught.value.body["message"]


IMAGE = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                      {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
TOOLS = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize("spec,using,status,said", [
    ("no_vision=openai", {"messages": IMAGE}, 400, "image_url is only supported by certain models"),
    ("no_vision=vllm", {"messages": IMAGE}, 400, "is not a multimodal model"),
    ("no_vision=llamacpp", {"messages": IMAGE}, 500, "image input is not supported"),
    ("no_tools=vllm", {"messages": HI, "tools": TOOLS}, 400, '"auto" tool choice requires --enable-auto-tool-choice'),
    ("no_tools=llamacpp", {"messages": HI, "tools": TOOLS}, 500, "tools param requires --jinja flag"),
    ("no_tools=ollama", {"messages": HI, "tools": TOOLS}, 400, "does not support tools"),
])
def test_a_missing_capability_refuses_only_requests_using_it(client: openai.OpenAI, spec: str, using: dict,
                                                             status: int, said: str) -> None:
    """no_vision refuses requests carrying an image, no_tools those carrying tools, as each server does."""
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=f"m1:{spec}", **using)
    assert caught.value.status_code == status and said in caught.value.message
    assert client.chat.completions.create(model=f"m1:{spec}", messages=HI).choices[0].message.content


# --- control and counting -----------------------------------------------------------------------


def test_set_fault_overrides_a_plain_name_and_can_be_lifted(client: openai.OpenAI, upstream: FaultUpstream) -> None:
    client.chat.completions.create(model="m2", messages=HI)
    upstream.set_fault("m2", Fault(fail_first=1, status=502))
    # fail_first counts from the moment the fault was set, not from the first request.
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m2", messages=HI)
    client.chat.completions.create(model="m2", messages=HI)
    upstream.set_fault("m2", Fault(status=429))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m2", messages=HI)
    upstream.set_fault("m2", None)
    assert client.chat.completions.create(model="m2", messages=HI).choices[0].message.content == "answer from m2"
    assert upstream.calls["m2"] == 5


def test_stats_endpoint_and_received_log_record_each_call(
    client: openai.OpenAI, upstream: FaultUpstream, base_url: str
) -> None:
    client.chat.completions.create(model="m1", messages=HI, temperature=0.5)
    with contextlib.suppress(openai.InternalServerError):
        client.completions.create(model="m1:status=500", prompt="hi")
    assert httpx.get(base_url + "/_stats").json() == {"calls": {"m1": 1, "m1:status=500": 1}}
    first = upstream.received[0]
    assert first.path == "/v1/chat/completions" and first.body["temperature"] == 0.5
    assert first.headers["authorization"] == "Bearer test-key"
    assert upstream.received[1].path == "/v1/completions"


def test_parse_fault_reads_combined_directives() -> None:
    assert parse_fault("delay=0.25,cut=3,bad_json") == Fault(delay_s=0.25, cut_after=3, bad_json=True)
    assert split_model("gpt:fail_first=2,status=429") == ("gpt", Fault(status=429, fail_first=2))
    assert split_model("plain") == ("plain", Fault())


@pytest.mark.parametrize("spec", ["status=abc", "status=200", "cut", "bad_json=1", "nonsense=1"])
def test_parse_fault_rejects_malformed_directives(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault(spec)


# --- serve() ------------------------------------------------------------------------------------


def test_serve_runs_several_servers_at_once_and_frees_their_ports() -> None:
    apps = [FaultUpstream([f"s{i}"]) for i in range(3)]
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve(a.app)) for a in apps]
        assert len(set(urls)) == 3
        assert [httpx.get(u + "/v1/models").json()["data"][0]["id"] for u in urls] == ["s0", "s1", "s2"]
    ports = [int(u.rsplit(":", 1)[1]) for u in urls]
    assert all(refuses_connections(p) for p in ports)


async def test_serve_works_as_an_async_context_manager() -> None:
    up = FaultUpstream()
    async with serve(up.app) as url, httpx.AsyncClient() as raw:
        reply = await raw.post(url + "/v1/completions", json={"model": "x", "prompt": "p"})
    assert reply.json()["choices"][0]["text"] == "answer from x"
    assert refuses_connections(int(url.rsplit(":", 1)[1]))


def test_serve_runs_the_app_lifespan_and_stops_with_a_stream_open() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        events.append("startup")
        yield
        events.append("shutdown")

    up = FaultUpstream()
    up.app.router.lifespan_context = lifespan
    started = time.perf_counter()
    with serve(up.app, graceful_timeout_s=0.5) as url:
        assert events == ["startup"]
        # A stream left hanging mid-request must not keep the server alive.
        threading.Thread(target=post_ignoring_errors, daemon=True,
                         args=(url + "/v1/completions", {"model": "x:delay=30", "prompt": "p"})).start()
        time.sleep(0.2)
    assert events == ["startup", "shutdown"]
    assert time.perf_counter() - started < 10


def test_serve_reports_a_failed_startup() -> None:
    @contextlib.asynccontextmanager
    async def broken(_: FastAPI):
        raise RuntimeError("cannot start")
        yield

    with pytest.raises(ServerStartError):
        with serve(FastAPI(lifespan=broken)):
            pass
