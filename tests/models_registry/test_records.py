"""Records: validation with a named field, exact JSON round trips, costs, independent copies."""
from __future__ import annotations

import orjson
import pytest

from models_registry.records import (
    Answer,
    JobRecord,
    ModelRecord,
    RegistryValidationError,
)
from router_core.pricing import Price
from tests.models_registry.helpers import make_record


def new(**overrides) -> ModelRecord:
    args = dict(name="m", base_url="https://api.example.com/v1", upstream_model="m", api_key_env=None,
                cost=Price(1.0, 2.0))
    args.update(overrides)
    return ModelRecord.new(**args)


@pytest.mark.parametrize("name", ["meta/llama-2-70b-chat", "gpt-4o", "org/model:8b", "x" * 128])
def test_names_without_whitespace_up_to_128_chars_are_accepted(name):
    assert new(name=name).name == name


@pytest.mark.parametrize("name", ["", "two words", "tab\tname", "new\nline", "x" * 129,
                                  "模型", "café", "nul\x00byte"])
def test_bad_names_are_refused_naming_the_field(name):
    with pytest.raises(RegistryValidationError) as err:
        new(name=name)
    assert err.value.field == "name"


@pytest.mark.parametrize("url", ["ftp://host/v1", "host:8000/v1", "http://", "http:///v1", "https://h:notaport/v1", "",
                                 "http://my host/v1", "http://h/v1 ", "http://h/my v1"])
def test_base_urls_must_be_http_or_https_with_a_host_and_no_whitespace(url):
    with pytest.raises(RegistryValidationError) as err:
        new(base_url=url)
    assert err.value.field == "base_url"
    assert "base_url" in str(err.value)


@pytest.mark.parametrize("env", ["sk-live-123abc", "OPENAI KEY", "1ST"])
def test_api_key_env_must_be_a_variable_name_so_a_pasted_key_is_refused(env):
    with pytest.raises(RegistryValidationError) as err:
        new(api_key_env=env)
    assert err.value.field == "api_key_env"


def test_a_profile_outside_the_unit_cube_or_with_mismatched_counts_is_refused():
    record = make_record()
    record.profile.errors[0] = 1.5
    with pytest.raises(RegistryValidationError, match="profile.errors"):
        record.validate()
    record = make_record()
    record.profile.counts.pop()
    with pytest.raises(RegistryValidationError, match="profile.counts"):
        record.validate()


def test_model_record_survives_a_json_round_trip_exactly():
    record = make_record(seed=3)
    back = ModelRecord.from_dict(orjson.loads(orjson.dumps(record.to_dict())))
    assert back == record
    assert isinstance(back.cost, Price) and back.profile.errors == record.profile.errors


def test_capabilities_round_trip_and_a_record_written_before_them_takes_everything():
    record = new(capabilities={"vision": False, "tools": True})
    back = ModelRecord.from_dict(orjson.loads(orjson.dumps(record.to_dict())))
    assert back.capabilities == {"vision": False, "tools": True}
    assert back.lacks(frozenset({"vision", "tools", "json_schema"})) == ["vision"]
    old = {k: v for k, v in make_record().to_dict().items() if k != "capabilities"}
    assert ModelRecord.from_dict(old).capabilities == {}
    assert ModelRecord.from_dict(old).lacks(frozenset({"vision"})) == []


@pytest.mark.parametrize("capabilities", [{"telepathy": False}, {"vision": "no"}, {"tools": 0}, ["vision"]])
def test_bad_capabilities_are_refused_naming_the_field(capabilities):
    record = new()
    record.capabilities = capabilities
    with pytest.raises(RegistryValidationError) as err:
        record.validate()
    assert err.value.field == "capabilities"


def test_from_dict_ignores_fields_it_does_not_know():
    record = make_record()
    assert ModelRecord.from_dict(record.to_dict() | {"added_by_a_newer_version": 1}) == record


def test_job_and_answer_round_trip():
    job = JobRecord(id="j1", model="m", state="running", done=3, total=400, errors=1, spend=0.25,
                    started_at=1.5, updated_at=2.5, error=None, owner="replica-a")
    assert JobRecord.from_dict(orjson.loads(orjson.dumps(job.to_dict()))) == job
    answer = Answer(prompt_id="arc-challenge.test.1", score=1.0, cost=1e-5, output_tokens=2, error=None)
    assert Answer.from_dict(orjson.loads(orjson.dumps(answer.to_dict()))) == answer


def test_graded_answers_keep_text_grader_and_verdict_and_old_records_still_load():
    answer = Answer(prompt_id="open.1", score=7 / 9, cost=1.5, output_tokens=40, text="Red leaves fall.",
                    grader="llm_judge:rating", verdict="Apt. Rating: [[8]]", judge_cost=0.5, answered_at=12.5)
    assert Answer.from_dict(orjson.loads(orjson.dumps(answer.to_dict()))) == answer
    # as written before the audit fields existed
    old = Answer.from_dict({"prompt_id": "p1", "score": 1.0, "cost": 0.1, "output_tokens": 2, "error": None})
    assert (old.text, old.grader, old.verdict, old.judge_cost, old.answered_at) == (None, None, None, 0.0, 0.0)
    job = JobRecord.from_dict({"id": "j1", "model": "m", "state": "running", "done": 3, "total": 400, "errors": 1,
                               "spend": 0.25, "started_at": 1.5, "updated_at": 2.5})
    assert (job.since, job.resume_at, job.resumes, job.options) == (None, None, 0, {})


def test_a_copy_shares_nothing_mutable_with_its_original():
    record = make_record()
    before = record.to_dict()
    copy = record.copy()
    copy.profile.errors[0] = 0.99
    copy.profile.counts.append(1.0)
    copy.cost.per_request = 9.0
    copy.capabilities["vision"] = False
    copy.state = "disabled"
    assert record.to_dict() == before
