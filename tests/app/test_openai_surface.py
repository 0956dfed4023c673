"""The rest of the OpenAI surface a client pointed at the gateway uses: models.retrieve,
"stream": null, the Responses API (stored responses' retrieve, delete, input items and cancel
too), embeddings, and which headers cross the gateway. The real openai SDK against a real
gateway in front of the fault upstream (OpenAI's wire formats)."""
from __future__ import annotations

import base64

import httpx
import openai
import pytest

from app.runtime.config import EmbeddingsConfig
from tests.support.clients import client, metric
from tests.support.fault_upstream import Fault, FaultUpstream
from tests.support.servers import serve
from tests.support.sqlite_lock import write_lock_held

MESSAGES = [{"role": "user", "content": "Name a prime number."}]


@pytest.fixture
def surface(make_gateway, fault_upstream, model_config):
    """A gateway with models `a/one` (slash in its name), `b`, `c` (its streams are cut after two
    events), and an embeddings model."""
    upstream, url = fault_upstream
    models = [model_config("a/one", url, upstream_model="up-a", score=0.9), model_config("b", url, score=0.6),
              model_config("c", url, upstream_model="c:cut=2", score=0.1)]
    embeddings = EmbeddingsConfig(name="text-embedding-3-small", base_url=url, upstream_model="up-embed")
    with make_gateway(models=models, embeddings_model=embeddings) as gw:
        yield upstream, gw


def test_models_retrieve_finds_router_names_and_registered_models(surface):
    _, gw = surface
    assert client(gw).models.retrieve("uniroute").id == "uniroute"
    assert client(gw).models.retrieve("uniroute:economy").owned_by == "uniroute"
    assert client(gw).models.retrieve("a/one").owned_by == "uniroute-registry"
    with pytest.raises(openai.NotFoundError):
        client(gw).models.retrieve("gpt-nothing")


def test_models_retrieve_accepts_every_router_name_a_completion_accepts(surface):
    # Clients that check a model name before using it must not refuse `uniroute:0.5`.
    _, gw = surface
    for name in ("uniroute:0.5", "uniroute:budget=0.001", "uniroute:quality=0.9"):
        found = client(gw).models.retrieve(name)
        assert (found.id, found.owned_by) == (name, "uniroute")
        assert client(gw).chat.completions.create(model=name, messages=MESSAGES).choices[0].message.content
    for name in ("uniroute:-1", "uniroute:quality=2", "uniroute:cheapest"):
        with pytest.raises(openai.NotFoundError) as caught:
            client(gw).models.retrieve(name)
        with pytest.raises(openai.BadRequestError):
            client(gw).chat.completions.create(model=name, messages=MESSAGES)
        assert caught.value.body["code"] == "model_not_found"
        assert name in caught.value.body["message"]


def test_stream_null_is_the_default_not_an_error(surface):
    upstream, gw = surface
    r = httpx.post(gw + "/v1/chat/completions", json={"model": "b", "messages": MESSAGES, "stream": None}, timeout=30)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "answer from b"
    assert "stream" not in upstream.received[-1].body


def test_responses_api_is_routed_and_forwarded(surface):
    upstream, gw = surface
    raw = client(gw).responses.with_raw_response.create(
        model="uniroute:0", input="Name a prime number.", instructions="Answer briefly.")
    assert raw.headers["x-uniroute-model"] == "a/one"
    assert int(raw.headers["x-uniroute-cluster"]) >= 0
    assert raw.parse().output_text == "answer from up-a"
    assert upstream.received[-1].path == "/v1/responses"
    assert upstream.received[-1].body["instructions"] == "Answer briefly."
    assert metric(gw, 'uniroute_tokens_total{kind="completion",model="a/one"}') > 0


def test_a_responses_request_with_instructions_and_no_input_is_routed_on_its_instructions(surface):
    # OpenAI's `input` is optional: a request may hold its prompt in `instructions` alone.
    upstream, gw = surface
    raw = client(gw).responses.with_raw_response.create(model="uniroute:0", instructions="Name a prime number.")
    assert raw.headers["x-uniroute-model"] == "a/one"
    assert int(raw.headers["x-uniroute-cluster"]) >= 0
    assert raw.parse().output_text == "answer from up-a"
    assert upstream.received[-1].body == {"model": "up-a", "instructions": "Name a prime number."}
    events = list(client(gw).responses.create(model="b", instructions="Name a colour.", stream=True))
    assert events[-1].response.output_text == "answer from b"
    dry = httpx.post(gw + "/v1/route", json={"model": "uniroute:0", "instructions": "Name a prime number."}, timeout=30)
    assert dry.status_code == 200 and dry.json()["model"] == "a/one"


def test_responses_api_streams_and_a_cut_one_raises(surface):
    _, gw = surface
    events = list(client(gw).responses.create(model="b", input=[{"role": "user", "content": "hi"}], stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "answer from b"
    assert metric(gw, 'uniroute_tokens_total{kind="completion",model="b"}') > 0
    with pytest.raises(openai.APIError, match="cut the stream"):
        for _ in client(gw).responses.create(model="c", input="hi", stream=True):
            pass


def test_a_vision_request_carrying_a_photo_is_forwarded_whole(surface):
    # A 4.5 MB JPEG is 6 MB in base64: the body limit must leave room for the photos users send.
    upstream, gw = surface
    photo = "data:image/jpeg;base64," + base64.b64encode(bytes(range(256)) * (4_500_000 // 256)).decode()
    content = [{"type": "text", "text": "What is in this photo?"}, {"type": "image_url", "image_url": {"url": photo}}]
    for model in ("b", "uniroute"):
        reply = client(gw).chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
        assert reply.choices[0].message.content
        assert upstream.received[-1].body["messages"][0]["content"][1]["image_url"]["url"] == photo


def test_embeddings_go_to_the_embeddings_model_or_a_named_registered_one(surface):
    upstream, gw = surface
    raw = client(gw).embeddings.with_raw_response.create(model="text-embedding-3-small", input=["hello", "hi"])
    reply = raw.parse()
    assert raw.headers["x-uniroute-model"] == "text-embedding-3-small"
    assert [len(d.embedding) for d in reply.data] == [4, 4]
    assert reply.data[0].embedding[0] == 5.0  # len("hello"), through base64 and back
    assert upstream.received[-1].body["model"] == "up-embed"
    assert client(gw).embeddings.create(model="uniroute", input="x").data[0].embedding[0] == 1.0
    assert client(gw).embeddings.with_raw_response.create(model="b", input="x").headers["x-uniroute-model"] == "b"
    with pytest.raises(openai.NotFoundError) as err:
        client(gw).embeddings.create(model="text-embedding-ada-002", input="x")
    assert "text-embedding-3-small" in err.value.body["message"]


def test_embeddings_without_a_configured_model_say_so(make_gateway, fault_upstream, model_config):
    _, url = fault_upstream
    with make_gateway(models=[model_config("b", url)]) as gw:
        with pytest.raises(openai.BadRequestError) as err:
            client(gw).embeddings.create(model="uniroute", input="x")
        assert "no embeddings_model" in err.value.body["message"]


def test_client_account_headers_stay_at_the_gateway_and_the_upstream_request_id_comes_back(surface):
    upstream, gw = surface
    raw = client(gw, organization="org-client", project="proj-client").chat.completions.with_raw_response.create(
        model="b", messages=MESSAGES)
    sent = upstream.received[-1].headers
    assert "openai-organization" not in sent and "openai-project" not in sent
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse()._request_id == raw.headers["x-request-id"]


def test_a_responses_follow_up_goes_to_the_model_that_holds_its_conversation(surface):
    upstream, gw = surface
    first = client(gw).responses.with_raw_response.create(model="b", input="Name a prime number.")
    assert first.headers["x-uniroute-model"] == "b"
    # at cost weight 0 routing picks a/one (the better model); the conversation is b's
    follow = client(gw).responses.with_raw_response.create(
        model="uniroute:0", input="And another one?", previous_response_id=first.parse().id)
    assert follow.headers["x-uniroute-model"] == "b"
    assert upstream.received[-1].body["previous_response_id"] == first.parse().id
    # the dry run says as much
    dry = httpx.post(gw + "/v1/route", json={"model": "uniroute:0", "input": "And another one?",
                                             "previous_response_id": first.parse().id}, timeout=30)
    assert dry.status_code == 200 and dry.json()["model"] == "b"
    # a streamed answer is remembered too, once its stream has ended
    events = list(client(gw).responses.create(model="b", input="Name a colour.", stream=True))
    streamed = events[-1].response.id
    again = client(gw).responses.with_raw_response.create(model="uniroute:0", input="Another?",
                                                          previous_response_id=streamed)
    assert again.headers["x-uniroute-model"] == "b"


def test_a_follow_up_sent_as_soon_as_a_stream_reads_response_completed_goes_to_the_model_that_holds_it(surface):
    """A client continues the conversation as soon as it reads `response.completed`. An upstream
    holding its response open after that event (as some servers and proxies do) kept the gateway
    draining it, and the response was remembered only then: the follow-up sent meanwhile was
    routed as a new conversation, to a model whose upstream does not store it."""
    upstream, gw = surface
    for hold_open_s in (0, 5):  # an upstream ending its body with its last event, then one holding it open
        upstream.set_fault("b", Fault(hold_open_s=hold_open_s))
        with client(gw).responses.create(model="b", input="Name a colour.", stream=True) as stream:
            completed = next(event for event in stream if event.type == "response.completed")
            follow = client(gw).responses.with_raw_response.create(model="uniroute:0", input="Another?",
                                                                   previous_response_id=completed.response.id)
        assert follow.headers["x-uniroute-model"] == "b", hold_open_s


def test_a_conversations_turns_go_to_the_model_that_holds_it(surface):
    upstream, gw = surface
    first = client(gw).responses.with_raw_response.create(model="b", input="Name a prime number.",
                                                          conversation="conv_1")
    assert first.headers["x-uniroute-model"] == "b"
    # at cost weight 0 routing picks a/one; the conversation (an id, or an object with one) is b's
    for conversation in ("conv_1", {"id": "conv_1"}):
        turn = client(gw).responses.with_raw_response.create(model="uniroute:0", input="And another one?",
                                                             conversation=conversation)
        assert turn.headers["x-uniroute-model"] == "b"
        assert upstream.received[-1].body["conversation"] == conversation
    dry = httpx.post(gw + "/v1/route", json={"model": "uniroute:0", "input": "More?", "conversation": "conv_1"},
                     timeout=30)
    assert dry.status_code == 200 and dry.json()["model"] == "b"
    # even unstored turns and streamed ones add to the conversation, and keep it where it is
    list(client(gw).responses.create(model="b", input="Name a colour.", conversation="conv_2", stream=True,
                                     store=False))
    again = client(gw).responses.with_raw_response.create(model="uniroute:0", input="Another?",
                                                          conversation="conv_2")
    assert again.headers["x-uniroute-model"] == "b"
    fresh = client(gw).responses.with_raw_response.create(model="uniroute:0", input="Hi", conversation="conv_new")
    assert fresh.headers["x-uniroute-model"] == "a/one"


def test_a_follow_up_to_an_unknown_or_unstored_response_is_routed_as_a_new_one(surface):
    _, gw = surface
    unstored = client(gw).responses.create(model="b", input="Name a prime number.", store=False)
    for previous in (unstored.id, "resp_from_elsewhere"):
        raw = client(gw).responses.with_raw_response.create(model="uniroute:0", input="And another?",
                                                            previous_response_id=previous)
        assert raw.headers["x-uniroute-model"] == "a/one"


def test_a_follow_up_whose_model_is_gone_says_so_rather_than_going_elsewhere(make_gateway, fault_upstream,
                                                                             model_config):
    _, url = fault_upstream
    models = [model_config("a", url, score=0.9), model_config("b", url, score=0.6)]
    with make_gateway(models=models, admin_key="k") as gw:
        first = client(gw).responses.create(model="b", input="Name a prime number.")
        r = httpx.patch(gw + "/admin/models/b", json={"enabled": False}, headers={"authorization": "Bearer k"})
        assert r.status_code == 200, r.text
        with pytest.raises(openai.NotFoundError) as err:
            client(gw).responses.create(model="uniroute:0", input="And another?", previous_response_id=first.id)
        assert err.value.body["param"] == "previous_response_id" and "`b`" in err.value.body["message"]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_follow_up_reaching_another_gateway_on_the_same_registry_goes_to_the_same_model(
        make_gateway, fault_upstream, model_config, tmp_path, request, backend):
    _, url = fault_upstream
    models = [model_config("a", url, score=0.9), model_config("b", url, score=0.6)]
    shared = ({"sqlite_path": str(tmp_path / "shared.db")} if backend == "sqlite" else
              {"redis_url": request.getfixturevalue("redis_url"),
               "redis_prefix": request.getfixturevalue("redis_prefix")})
    with make_gateway(models=models, **shared) as one, make_gateway(models=models, **shared) as two:
        first = client(one).responses.create(model="b", input="Name a prime number.")
        follow = client(two).responses.with_raw_response.create(model="uniroute:0", input="And another?",
                                                                previous_response_id=first.id)
        assert follow.headers["x-uniroute-model"] == "b"


def test_with_the_registry_away_a_responses_turn_is_answered_and_a_follow_up_routed(
        make_gateway, fault_upstream, model_config, private_redis):
    _, url = fault_upstream
    models = [model_config("a", url, score=0.9), model_config("b", url, score=0.6)]
    with make_gateway(models=models, redis_url=private_redis.url, redis_prefix="pins:") as gw:
        first = client(gw).responses.create(model="b", input="Name a prime number.")
        private_redis.kill()
        # nothing to remember it in, nothing to recall it from: answered, and routed as new
        assert client(gw).responses.create(model="b", input="Name a colour.").output_text == "answer from b"
        follow = client(gw).responses.with_raw_response.create(model="uniroute:0", input="And another?",
                                                               previous_response_id=first.id)
        assert follow.status_code == 200 and follow.headers["x-uniroute-model"] == "a"


def test_while_another_process_holds_the_registry_files_write_lock_a_follow_up_still_finds_its_model(
        make_gateway, fault_upstream, model_config, tmp_path):
    _, url = fault_upstream
    models = [model_config("a", url, score=0.9), model_config("b", url, score=0.6)]
    db = tmp_path / "pins.db"
    with make_gateway(models=models, sqlite_path=str(db)) as gw:
        first = client(gw).responses.create(model="b", input="Name a prime number.")
        with write_lock_held(db):
            # recalling who holds a response is a read, which a WAL file serves under another's write lock
            follow = client(gw).responses.with_raw_response.create(model="uniroute:0", input="And another?",
                                                                   previous_response_id=first.id)
            assert follow.headers["x-uniroute-model"] == "b"
            assert httpx.get(f"{gw}/v1/responses/{first.id}", timeout=30).status_code == 200


# --- stored responses: retrieve, delete, input items, cancel ------------------------------------

ADMIN = {"authorization": "Bearer k"}


@pytest.fixture
def holders(make_gateway, model_config, monkeypatch):
    """A gateway preferring model `a` over `b` at cost weight 0, each on an upstream of its own
    that stores its responses (`b`'s called with its own key); yields both upstreams and the gateway."""
    monkeypatch.setenv("B_UPSTREAM_KEY", "sk-b-upstream")
    upstream_a, upstream_b = FaultUpstream(), FaultUpstream()
    with serve(upstream_a.app) as url_a, serve(upstream_b.app) as url_b:
        models = [model_config("a", url_a + "/v1", score=0.9),
                  model_config("b", url_b + "/v1", score=0.6).model_copy(update={"api_key_env": "B_UPSTREAM_KEY"})]
        with make_gateway(models=models, admin_key="k") as gw:
            yield upstream_a, upstream_b, gw


def stored_requests(upstream: FaultUpstream) -> list[str]:
    """The paths of the requests an upstream got about stored responses."""
    return [r.path for r in upstream.received if r.path.startswith("/v1/responses/")]


def test_a_stored_response_is_retrieved_from_the_model_that_answered_it(holders):
    upstream_a, upstream_b, gw = holders
    made = client(gw).responses.create(model="b", input="Name a prime number.")
    counted = 'uniroute_requests_total{model="b",route="stored_responses",status="200"}'
    before = metric(gw, counted)
    raw = client(gw).responses.with_raw_response.retrieve(made.id)
    assert (raw.parse().id, raw.parse().output_text) == (made.id, "answer from b")
    assert raw.headers["x-uniroute-model"] == "b" and raw.headers["x-request-id"].startswith("req_")
    asked = upstream_b.received[-1]
    assert asked.path == f"/v1/responses/{made.id}"
    assert asked.headers["authorization"] == "Bearer sk-b-upstream"  # b's own key, not the client's
    assert stored_requests(upstream_a) == []
    # counted apart from the rest (it was `other`), by the model that holds it
    assert metric(gw, counted) == before + 1


def test_a_stored_responses_input_items_are_listed_with_the_clients_paging(holders):
    _, upstream_b, gw = holders
    made = client(gw).responses.create(model="b", input=[{"role": "user", "content": "Name a prime."},
                                                         {"role": "assistant", "content": "Seven."},
                                                         {"role": "user", "content": "Another?"}])
    first = client(gw).responses.input_items.list(made.id, order="asc", limit=2)
    assert [(i.type, i.role, i.content[0].text) for i in first.data] == [
        ("message", "user", "Name a prime."), ("message", "assistant", "Seven.")]
    assert first.has_more
    assert upstream_b.received[-1].path == f"/v1/responses/{made.id}/input_items"
    assert sorted(upstream_b.received[-1].query.split("&")) == ["limit=2", "order=asc"]
    rest = client(gw).responses.input_items.list(made.id, order="asc", after=first.last_id)
    assert [i.content[0].text for i in rest.data] == ["Another?"] and not rest.has_more


def test_a_deleted_response_is_gone_upstream_and_at_the_gateway(holders):
    _, upstream_b, gw = holders
    made = client(gw).responses.create(model="b", input="Name a prime number.")
    r = httpx.delete(f"{gw}/v1/responses/{made.id}", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": made.id, "object": "response.deleted", "deleted": True}
    assert made.id not in upstream_b.stored
    asked = len(upstream_b.received)
    with pytest.raises(openai.NotFoundError) as gone:
        client(gw).responses.retrieve(made.id)
    assert gone.value.body["code"] == "response_not_found"  # the gateway's: the memo is gone
    assert len(upstream_b.received) == asked
    # nor is a follow-up pinned to b any longer
    follow = client(gw).responses.with_raw_response.create(model="uniroute:0", input="And another?",
                                                           previous_response_id=made.id)
    assert follow.headers["x-uniroute-model"] == "a"


def test_an_unknown_response_id_is_openais_404_for_every_stored_response_request(holders):
    _, _, gw = holders
    calls = [lambda: client(gw).responses.retrieve("resp_unknown"),
             lambda: client(gw).responses.delete("resp_unknown"),
             lambda: client(gw).responses.input_items.list("resp_unknown"),
             lambda: client(gw).responses.cancel("resp_unknown")]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as err:
            call()
        body = err.value.body
        assert (body["type"], body["param"], body["code"]) == ("not_found_error", "response_id",
                                                               "response_not_found")
        assert "resp_unknown" in body["message"] and "store" in body["message"]


def test_an_unstored_response_is_not_retrievable_through_the_gateway(holders):
    _, upstream_b, gw = holders
    unstored = client(gw).responses.create(model="b", input="Name a prime number.", store=False)
    with pytest.raises(openai.NotFoundError) as err:
        client(gw).responses.retrieve(unstored.id)
    assert err.value.body["code"] == "response_not_found"
    assert stored_requests(upstream_b) == []


def test_a_response_whose_model_is_disabled_says_so(holders):
    _, upstream_b, gw = holders
    made = client(gw).responses.create(model="b", input="Name a prime number.")
    r = httpx.patch(gw + "/admin/models/b", json={"enabled": False}, headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    with pytest.raises(openai.NotFoundError) as err:
        client(gw).responses.retrieve(made.id)
    assert "`b`" in err.value.body["message"] and err.value.body["code"] == "model_not_found"
    assert stored_requests(upstream_b) == []


def test_an_upstream_404_for_a_stored_response_is_relayed_and_leaves_the_model_in_routing(holders):
    _, upstream_b, gw = holders
    made = client(gw).responses.create(model="b", input="Name a prime number.")
    del upstream_b.stored[made.id]  # gone upstream (expired, deleted elsewhere), still remembered here
    for _ in range(4):  # more than the failures that would cool a model down
        with pytest.raises(openai.NotFoundError) as err:
            client(gw).responses.retrieve(made.id)
        assert err.value.body["message"] == f"Response with id '{made.id}' not found."  # the upstream's
        assert err.value.response.headers["x-request-id"].startswith("req_")
    assert metric(gw, 'uniroute_upstream_failures_total{model="b"') == 0
    assert metric(gw, 'uniroute_cooldowns_total{model="b"') == 0
    record = httpx.get(gw + "/admin/models/b", headers=ADMIN, timeout=30).json()
    assert (record["state"], record["enabled"], record["error"]) == ("ready", True, None)
    assert client(gw).chat.completions.create(model="b", messages=MESSAGES).choices[0].message.content \
        == "answer from b"


def test_a_cancel_is_the_upstreams_answer(holders):
    _, upstream_b, gw = holders
    made = client(gw).responses.create(model="b", input="Name a prime number.")
    with pytest.raises(openai.BadRequestError, match="synchronous"):
        client(gw).responses.cancel(made.id)
    assert upstream_b.received[-1].path == f"/v1/responses/{made.id}/cancel"


def test_a_failing_upstream_is_retried_then_the_gateways_502(holders):
    _, upstream_b, gw = holders
    made = client(gw).responses.create(model="b", input="Name a prime number.")
    upstream_b.set_fault("b", Fault(status=503))
    with pytest.raises(openai.InternalServerError) as err:
        client(gw).responses.retrieve(made.id)
    assert err.value.status_code == 502 and err.value.body["code"] == "upstream_failed"
    assert len(stored_requests(upstream_b)) == 2  # retried once (`retries`)
    upstream_b.set_fault("b", None)
    assert client(gw).responses.retrieve(made.id).id == made.id


def test_retrieving_a_stored_response_as_a_stream_is_refused(holders):
    _, upstream_b, gw = holders
    made = client(gw).responses.create(model="b", input="Name a prime number.")
    with pytest.raises(openai.BadRequestError) as err:
        client(gw).responses.retrieve(made.id, stream=True)
    assert err.value.body["param"] == "stream"
    assert stored_requests(upstream_b) == []


def test_a_clients_stored_responses_and_conversations_are_out_of_another_clients_reach(
        make_gateway, fault_upstream, model_config):
    """Each client key's responses are its own, though one upstream account stores them all."""
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("b", url)], api_keys=["key-of-alice", "key-of-bob"]) as gw:
        alice, bob = client(gw, api_key="key-of-alice"), client(gw, api_key="key-of-bob")
        made = alice.responses.create(model="b", input="My account number is 1234.")
        alice.responses.create(model="b", input="My PIN is 9876.", conversation="conv_alice")
        asked = len(upstream.received)
        for call in [lambda: bob.responses.retrieve(made.id), lambda: bob.responses.input_items.list(made.id),
                     lambda: bob.responses.cancel(made.id), lambda: bob.responses.delete(made.id),
                     lambda: bob.responses.create(model="uniroute", input="What did I tell you?",
                                                  previous_response_id=made.id),
                     lambda: bob.responses.create(model="b", input="What did I tell you?",  # named, not routed
                                                  previous_response_id=made.id),
                     lambda: bob.responses.create(model="uniroute", input="What did I tell you?",
                                                  conversation="conv_alice")]:
            with pytest.raises(openai.NotFoundError) as err:
                call()
            assert err.value.body["code"] == "response_not_found"
        assert len(upstream.received) == asked  # none of it reached the upstream
        # their owner still reaches them
        assert alice.responses.retrieve(made.id).output_text == "answer from b"
        follow = alice.responses.with_raw_response.create(model="uniroute", input="Again?", conversation="conv_alice")
        assert follow.headers["x-uniroute-model"] == "b"


def test_with_the_registry_away_a_stored_response_request_is_a_503(make_gateway, fault_upstream, model_config,
                                                                    private_redis):
    _, url = fault_upstream
    with make_gateway(models=[model_config("b", url)], redis_url=private_redis.url, redis_prefix="stored:") as gw:
        made = client(gw).responses.create(model="b", input="Name a prime number.")
        private_redis.kill()
        r = httpx.get(f"{gw}/v1/responses/{made.id}", timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "registry_unavailable"
