"""A parameter the chosen model refuses (OpenAI's reasoning models: `max_tokens`, `temperature`)
is renamed or left out and the same model answers; one the answer depends on (`logprobs`) sends
the request elsewhere. Over a real gateway, the openai SDK and the fault upstream's `reasoning`
directive, which refuses parameters with OpenAI's own error bodies."""
from __future__ import annotations

import openai
import pytest

from app.upstream.faults import elsewhere
from app.upstream.parameters import adapted, refused_parameter
from router_core.repset import RepItem, write_repset
from tests.app.test_admin import ADMIN, admin, wait_job
from tests.support.clients import client
from tests.support.fault_upstream import reasoning_refusal

MESSAGES = [{"role": "user", "content": "Name a prime number."}]


def test_a_refused_max_tokens_is_renamed_and_a_refused_sampling_setting_left_out():
    body = {"model": "m", "max_tokens": 64, "temperature": 0, "messages": MESSAGES}
    out = adapted(body, frozenset({"max_tokens", "temperature"}))
    assert out == {"model": "m", "max_completion_tokens": 64, "messages": MESSAGES}
    assert body["max_tokens"] == 64 and body["temperature"] == 0  # the client's body is left as it is
    # max_completion_tokens given too wins, as OpenAI has it: max_tokens is only left out
    both = adapted({"max_tokens": 64, "max_completion_tokens": 32}, frozenset({"max_tokens"}))
    assert both == {"max_completion_tokens": 32}
    assert adapted(body, frozenset({"top_p"})) is body  # nothing refused is in it


def test_openai_refusals_of_a_parameter_are_read_and_only_those_of_what_the_answer_needs_go_elsewhere():
    assert refused_parameter(reasoning_refusal({"max_tokens": 5})) == "max_tokens"
    assert refused_parameter(reasoning_refusal({"temperature": 0})) == "temperature"
    assert refused_parameter({"error": {"message": "bad", "param": "messages", "code": None}}) is None
    chat = "/chat/completions"
    assert elsewhere(reasoning_refusal({"max_tokens": 5}), chat) is None  # renamed, the same model asked again
    assert elsewhere(reasoning_refusal({"temperature": 0.2}), chat) is None  # left out, likewise
    assert elsewhere(reasoning_refusal({"logprobs": True}), chat) == "unsupported"
    # where the forwarder cannot ask again (an error in place of an answer), the next model is tried
    assert elsewhere(reasoning_refusal({"max_tokens": 5})) == "unsupported"
    # Groq's refusal of a field it does not know: OpenAI's bookkeeping is left out but on the
    # Responses API, where `store` keeps what a later request names
    groq = {"error": {"message": "property 'store' is unsupported, did you mean 'stop'?",
                      "type": "invalid_request_error"}}
    assert refused_parameter(groq) == "store"
    assert elsewhere(groq, chat) is None and elsewhere(groq, "/responses") == "unsupported"
    unknown = {"error": {"message": "Unrecognized request argument supplied: reasoning_effort",
                         "type": "invalid_request_error", "param": None, "code": None}}
    assert refused_parameter(unknown) == "reasoning_effort" and elsewhere(unknown, "/responses") is None
    # a field this cannot mend stays the client's error, as it was (and the gateway's own
    # stream_options is asked again without, app/upstream/forwarding.py)
    for name in ("stream_options", "tempreature"):
        unknown["error"]["message"] = f"Unrecognized request argument supplied: {name}"
        assert refused_parameter(unknown) is None and elsewhere(unknown, chat) is None
    nested = {"error": {"message": "'messages.0' : for 'role:user' the following must be satisfied[('messages.0' : "
                                   "property 'timestamp' is unsupported)]", "type": "invalid_request_error"}}
    assert refused_parameter(nested) is None


@pytest.fixture
def reasoning_first(make_gateway, fault_upstream, model_config):
    """A gateway preferring `first`, served as a reasoning model refusing parameters, over `second`."""
    upstream, url = fault_upstream
    models = [model_config("first", url, upstream_model="first:reasoning", score=0.9),
              model_config("second", url, score=0.6)]
    return upstream, make_gateway(models=models)


@pytest.mark.parametrize("stream", [False, True])
def test_a_reasoning_model_chosen_by_the_router_answers_a_request_with_max_tokens_and_temperature(
        reasoning_first, stream):
    """Before, the client got OpenAI's 400 "Unsupported parameter: 'max_tokens' ..." for a model it
    never chose, whenever the router chose a reasoning model."""
    upstream, gateway = reasoning_first
    with gateway as gw:
        for _ in range(2):
            raw = client(gw).chat.completions.with_raw_response.create(
                model="uniroute:0", messages=MESSAGES, max_tokens=64, temperature=0, stream=stream)
            assert raw.headers["x-uniroute-model"] == "first"
            answer = raw.parse()
            text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream \
                else answer.choices[0].message.content
            assert text == "answer from first:reasoning"
        sent = [r.body for r in upstream.received if r.model == "first:reasoning"]
        # the first request learns both refusals, one at a time; the second is sent as the model takes it
        assert [sorted(set(b) & {"max_tokens", "max_completion_tokens", "temperature"}) for b in sent] == [
            ["max_tokens", "temperature"], ["max_completion_tokens", "temperature"], ["max_completion_tokens"],
            ["max_completion_tokens"]]
        assert sent[-1]["max_completion_tokens"] == 64
        assert upstream.calls["second"] == 0


def test_a_refused_parameter_the_answer_depends_on_sends_the_request_to_the_next_model(reasoning_first):
    upstream, gateway = reasoning_first
    with gateway as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES,
                                                                   logprobs=True)
        assert raw.headers["x-uniroute-model"] == "second"
        # a client naming the model chose it: it gets the refusal as OpenAI words it
        with pytest.raises(openai.BadRequestError) as err:
            client(gw).chat.completions.create(model="first", messages=MESSAGES, logprobs=True)
        assert err.value.body["code"] == "unsupported_parameter" and err.value.body["param"] == "logprobs"


def test_a_reasoning_model_is_profiled_on_its_answers(make_gateway, fault_upstream, tmp_path):
    """A profiling job sends `max_tokens` and `temperature: 0` with every prompt. Before, a reasoning
    model refused each of them, and its job could never profile it."""
    upstream, url = fault_upstream
    repset = tmp_path / "repset.jsonl"
    write_repset([RepItem(f"mc.{i}", f"Question {i}?\nA) yes\nB) no\nAnswer:", "A", "mc_letter", "quiz")
                  for i in range(3)], repset)
    with make_gateway(models=[], admin_key=ADMIN, repset_path=str(repset)) as gw:
        r = admin(gw, "POST", "/models", json={"name": "thinker", "base_url": url, "upstream_model": "thinker:reasoning",
                                                "cost": {"per_request": 1}})
        job = wait_job(gw, r.json()["job_id"])
        answers = admin(gw, "GET", "/models/thinker/answers").json()["data"]
    assert job["state"] == "done", job
    assert len(answers) == 3 and all(a["graded"] for a in answers), [a["error"] for a in answers]
    assert all("max_completion_tokens" in r.body and "temperature" not in r.body for r in upstream.received[-3:])


def test_a_groq_model_chosen_by_the_router_answers_a_request_asking_openai_to_store_it(make_gateway, fault_upstream,
                                                                                     model_config):
    """Before, Groq's 400 "property 'store' is unsupported" reached the client, which had not
    chosen Groq; now `store` is left out of every request to that model."""
    upstream, url = fault_upstream
    models = [model_config("fast", url, upstream_model="fast:groq", score=0.9), model_config("other", url, score=0.6)]
    with make_gateway(models=models) as gw:
        for _ in range(2):
            raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES,
                                                                       store=True, metadata={"team": "search"})
            assert raw.headers["x-uniroute-model"] == "fast"
    sent = [r.body for r in upstream.received if r.model == "fast:groq"]
    assert ["store" in b for b in sent] == [True, False, False] and all(b["metadata"] for b in sent)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_bounding_its_answer_with_max_completion_tokens_is_bounded_on_a_server_ignoring_that_name(
        make_gateway, fault_upstream, model_config, stream):
    """Ollama (and LM Studio, llama-cpp-python) ignore chat's `max_completion_tokens`, the name
    OpenAI's docs now give clients: before, the answer ran on past the client's bound."""
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("local", url, upstream_model="local:ollama")]) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES,
                                                                   max_completion_tokens=2, stream=stream)
        chunks = list(raw.parse()) if stream else None
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] \
            if stream else [raw.parse().choices[0].finish_reason]
    assert finish == ["length"]
    assert upstream.received[-1].body["max_tokens"] == 2 and "max_completion_tokens" not in upstream.received[-1].body


def test_a_reasoning_model_gets_the_bound_as_max_completion_tokens_after_refusing_max_tokens(reasoning_first):
    upstream, gateway = reasoning_first
    with gateway as gw:
        for _ in range(2):
            raw = client(gw).chat.completions.with_raw_response.create(model="first", messages=MESSAGES,
                                                                       max_completion_tokens=50)
            assert raw.parse().choices[0].message.content == "answer from first:reasoning"
    sent = [(b.get("max_tokens"), b.get("max_completion_tokens")) for b in (r.body for r in upstream.received)]
    assert sent == [(50, None), (None, 50), (None, 50)]  # refused once, then sent as it takes it


def test_a_developer_message_reaches_a_model_whose_template_has_no_such_role_as_a_system_one(
        make_gateway, fault_upstream, model_config):
    """Codex and other clients send the system prompt as OpenAI's `developer` role, which vLLM under
    a Qwen chat template refuses ("Unexpected message role."): before, the client got that 400
    whenever the router chose such a model."""
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("qwen", url, upstream_model="qwen:no_developer")]) as gw:
        messages = [{"role": "developer", "content": "Answer in one word."}, *MESSAGES]
        chat = client(gw).chat.completions.create(model="uniroute:0", messages=messages)
        assert chat.choices[0].message.content == "answer from qwen:no_developer"
        assert [m["role"] for m in upstream.received[-1].body["messages"]] == ["system", "user"]
        response = client(gw).responses.create(model="qwen", input=[
            {"role": "developer", "content": "Answer in one word."}, {"role": "user", "content": "Name a prime."}])
        assert response.output_text == "answer from qwen:no_developer"
        assert [m["role"] for m in upstream.received[-1].body["input"]] == ["system", "user"]


def test_a_model_without_reasoning_chosen_by_the_router_answers_a_request_with_a_reasoning_effort(
        make_gateway, fault_upstream, model_config):
    """Clients such as Codex send `reasoning_effort`, which OpenAI's models without reasoning refuse
    (gpt-4o-mini, gpt-4.1): before, that 400 reached the client whenever the router chose one."""
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("mini", url, upstream_model="mini:no_reasoning")]) as gw:
        for _ in range(2):
            chat = client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES, reasoning_effort="high")
            assert chat.choices[0].message.content == "answer from mini:no_reasoning"
    assert ["reasoning_effort" in r.body for r in upstream.received] == [True, False, False]
