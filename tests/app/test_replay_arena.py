"""The demo's replay upstream over a real socket, for open-ended traffic: arena-bench-v1's recorded
answers under one name per LLM, the replay judge, and 422 `no_recorded_answer` to a profiling call
a model has no recorded answer for (a marked stand-in to any other call)."""
from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator

import openai
import pytest

from app.demo import ROUTERBENCH_DIR
from app.demo.arena import ARENA_DIR
from app.demo.replay_data import demo_replay_app
from app.demo.replay_judge import JUDGE_MODEL
from app.demo.replay_upstream import NO_RECORDED_ANSWER, STAND_IN_MARK
from app.profiling.jobs import PROFILING_HEADERS
from router_core.datasets import load_routerbench
from router_core.judging import judge_requests, judge_score
from tests.support.servers import serve

ROUTERBENCH_ONLY = {"meta/code-llama-instruct-34b-chat", "zero-one-ai/Yi-34B-Chat", "mistralai/mixtral-8x7b-chat",
                    "WizardLM/WizardLM-13B-V1.2"}
SHARED = {"gpt-3.5-turbo-1106", "gpt-4-1106-preview", "claude-v1", "claude-v2", "claude-instant-v1",
          "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat"}
ARENA_ONLY = {"Starling-LM-7B-alpha", "gpt-3.5-turbo", "gpt-4-0314", "openchat_3.5", "palm-2-chat-bison-001",
              "vicuna-33b-v1.3"}
# A question no LLM was recorded on (as a general set's maths items).
UNRECORDED = "Natalia sold clips to 48 friends in April and half as many in May. How many in all?"


def recorded_rows() -> tuple[dict[str, dict], list[dict]]:
    """The vendored prompts by id and the answer lines, read without the loader under test."""
    prompts = {}
    for line in (ARENA_DIR / "prompts.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        prompts[rec["id"]] = rec
    with gzip.open(ARENA_DIR / "answers.jsonl.gz", "rt", encoding="utf-8") as fh:
        answers = [json.loads(line) for line in fh]
    return prompts, answers


@pytest.fixture(scope="module")
def recorded() -> tuple[dict[str, dict], list[dict]]:
    return recorded_rows()


@pytest.fixture(scope="module")
def client(arena) -> Iterator[openai.OpenAI]:
    with serve(demo_replay_app(latency_scale=0.0, arena=arena)) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


def answer_of(recorded, arena_name: str, index: int) -> tuple[str, str]:
    """(prompt, recorded answer) of `arena_name`'s `index`-th recorded answer."""
    prompts, answers = recorded
    line = [a for a in answers if a["model"] == arena_name][index]
    return prompts[line["id"]]["prompt"], line["answer"]


def ask(client: openai.OpenAI, model: str, prompt: str, headers: dict[str, str] | None = None) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           extra_headers=headers)
    return reply.choices[0].message.content


def test_a_shared_llm_serves_its_arena_answer_under_its_routerbench_name(client, recorded):
    for index in (0, 137):
        prompt, answer = answer_of(recorded, "claude-2.1", index)
        assert ask(client, "claude-v2", prompt) == answer
    prompt, answer = answer_of(recorded, "Llama-2-70b-chat", 5)
    assert ask(client, "meta/llama-2-70b-chat", prompt) == answer
    with pytest.raises(openai.NotFoundError):
        ask(client, "claude-2.1", prompt)  # one name per LLM


def test_an_arena_only_llm_serves_its_arena_answer_streamed_and_not(client, recorded):
    prompt, answer = answer_of(recorded, "gpt-4-0314", 42)
    assert ask(client, "gpt-4-0314", prompt) == answer
    chunks = client.chat.completions.create(model="gpt-4-0314", stream=True,
                                            messages=[{"role": "user", "content": prompt}])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer


def test_models_lists_seventeen_llms_and_the_judge(client):
    assert {m.id for m in client.models.list()} == ROUTERBENCH_ONLY | SHARED | ARENA_ONLY | {JUDGE_MODEL}


def test_a_profiling_call_without_a_recorded_answer_is_a_422_no_recorded_answer(client, recorded):
    arena_prompt, _ = answer_of(recorded, "gpt-4-0314", 3)
    mc_prompt = load_routerbench(ROUTERBENCH_DIR / "arc_challenge_test.csv").prompts[0]
    for model, prompt in (("zero-one-ai/Yi-34B-Chat", arena_prompt), ("gpt-4-0314", mc_prompt),
                          ("claude-v2", UNRECORDED)):
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            ask(client, model, prompt, PROFILING_HEADERS)
        assert caught.value.status_code == 422 and caught.value.body["code"] == NO_RECORDED_ANSWER
        # routed traffic gets the marked stand-in, so the demo answers whatever it is sent
        assert ask(client, model, prompt).startswith(STAND_IN_MARK.format(model=model))
    assert ask(client, "claude-v2", mc_prompt, PROFILING_HEADERS)  # recorded in RouterBench


def judge(client: openai.OpenAI, kind: str, question: str, reference: str, answer: str) -> float | None:
    """judge_score of the replay judge's replies to the judge requests of `kind`."""
    replies = [client.chat.completions.create(model=JUDGE_MODEL, messages=messages, temperature=0,
                                              max_tokens=2048).choices[0].message.content
               for messages in judge_requests(kind, question, reference, answer)]
    return judge_score(kind, replies)


def test_the_replay_judge_reproduces_the_recorded_ratings(client, recorded):
    prompts, answers = recorded
    sample = random.Random(7).sample(answers, 60)
    assert len({a["rating"] for a in sample}) >= 8  # the sample spans the scale
    for line in sample:
        item = prompts[line["id"]]
        assert judge(client, "rating", item["prompt"], item["reference"], line["answer"]) == (line["rating"] - 1) / 9


def test_the_replay_judge_gives_no_verdict_for_an_unrecorded_answer_or_another_kind(client, recorded):
    prompts, answers = recorded
    line = answers[11]
    item = prompts[line["id"]]
    cut = line["answer"][: len(line["answer"]) // 2]  # as max_tokens would cut it
    other_question = prompts[answers[-1]["id"]]["prompt"]
    assert judge(client, "rating", item["prompt"], item["reference"], cut) is None
    assert judge(client, "rating", other_question, item["reference"], line["answer"]) is None
    assert judge(client, "pairwise", item["prompt"], item["reference"], line["answer"]) is None
    assert judge(client, "correct", item["prompt"], item["reference"], line["answer"]) is None
