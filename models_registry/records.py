"""What the registry stores: registered LLMs, profiling jobs and graded answers.

Plain dataclasses with a JSON round trip (`to_dict` / `from_dict`). A record never holds an API
key's value, only the NAME of the environment variable that holds it.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from router_core.pricing import InvalidField, Price, validate_price
from router_core.profiles import Profile

T = TypeVar("T")
ModelState = Literal["profiling", "ready", "failed", "disabled"]
# `paused`: stopped on upstream faults (or by the operator); resumed at `resume_at` or by the operator.
JobState = Literal["running", "paused", "done", "failed", "cancelled"]

MAX_NAME_LEN = 128
# What a model may be declared unable to take (`capabilities`, each true or false; one left out is
# assumed taken): image inputs, tools (function calling), structured output to a JSON schema.
CAPABILITIES = ("vision", "tools", "json_schema")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RegistryValidationError(InvalidField):
    """A record field holds a value the registry refuses; `field` names it (dotted for nested)."""


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`data` restricted to `cls`'s fields, so records written by a newer version still load."""
    if not isinstance(data, dict):
        raise RegistryValidationError(cls.__name__, f"expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _clone(obj: T) -> T:
    """A shallow copy that skips __init__: the source is already valid, and the gateway copies
    records on every request (5x faster than dataclasses.replace)."""
    clone = object.__new__(type(obj))
    clone.__dict__.update(obj.__dict__)
    return clone


def validate_name(name: object) -> str:
    """A model name: non-empty, printable ASCII without whitespace, at most 128 characters
    (slashes allowed)."""
    if not isinstance(name, str) or not name:
        raise RegistryValidationError("name", "must be a non-empty string")
    if len(name) > MAX_NAME_LEN:
        raise RegistryValidationError("name", f"must be at most {MAX_NAME_LEN} characters, got {len(name)}")
    if any(ch.isspace() for ch in name):
        raise RegistryValidationError("name", f"must not contain whitespace: {name!r}")
    if not all("!" <= ch <= "~" for ch in name):
        # Every answer names its model in the x-uniroute-model header, and a header value is
        # ASCII: any other character failed each request the model answered with a 500.
        raise RegistryValidationError("name", f"must be printable ASCII (it is sent in a response header): {name!r}")
    return name


def validate_base_url(url: object) -> str:
    """An upstream base URL: http or https, with a host."""
    if not isinstance(url, str):
        raise RegistryValidationError("base_url", "must be a string")
    try:
        parts = urlsplit(url)
        parts.port  # raises on a malformed port
    except ValueError as exc:
        raise RegistryValidationError("base_url", f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise RegistryValidationError("base_url", f"must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise RegistryValidationError("base_url", f"has no host: {url!r}")
    if any(ch.isspace() for ch in url):
        # urlsplit takes "http://h h/v1" whole; every request then failed to connect
        raise RegistryValidationError("base_url", f"must not contain whitespace: {url!r}")
    return url


@dataclass
class ModelRecord:
    """A registered LLM. `api_key_env` is the NAME of the variable holding its key, never the key."""

    name: str
    base_url: str
    upstream_model: str
    api_key_env: str | None
    cost: Price
    state: ModelState = "profiling"
    profile: Profile | None = None
    profiled_at: float | None = None
    enabled: bool = True
    spend: float = 0.0
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    revision: int = 0
    # What the model is declared to take or not (CAPABILITIES); none declared: it takes everything.
    capabilities: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def new(cls, name: str, base_url: str, upstream_model: str, api_key_env: str | None,
            cost: Price, capabilities: dict[str, bool] | None = None) -> ModelRecord:
        """A validated record for a model about to be registered (state `profiling`, revision 0)."""
        now = time.time()
        record = cls(name=name, base_url=base_url, upstream_model=upstream_model, api_key_env=api_key_env,
                     cost=cost, created_at=now, updated_at=now, capabilities=capabilities or {})
        record.validate()
        return record

    def validate(self) -> None:
        """Raise RegistryValidationError naming the first field that is not acceptable."""
        validate_name(self.name)
        validate_base_url(self.base_url)
        if not isinstance(self.upstream_model, str) or not self.upstream_model.strip():
            raise RegistryValidationError("upstream_model", "must be a non-empty string")
        if self.api_key_env is not None and not (
            isinstance(self.api_key_env, str) and _ENV_NAME.fullmatch(self.api_key_env)
        ):
            # A pattern for variable names also refuses most key values pasted here by mistake.
            raise RegistryValidationError(
                "api_key_env", "must be the NAME of an environment variable (letters, digits, _), not a key")
        if not isinstance(self.cost, Price):
            raise RegistryValidationError("cost", "must be a Price")
        if self.state not in get_args(ModelState):
            raise RegistryValidationError("state", f"must be one of {get_args(ModelState)}, got {self.state!r}")
        if self.profile is not None:
            try:
                self.profile.validate()
            except InvalidField as exc:  # the registry names its refusals in one type
                raise RegistryValidationError(exc.field, exc.message) from None
        validate_price("spend", self.spend)
        if not isinstance(self.capabilities, dict) or any(
                k not in CAPABILITIES or type(v) is not bool for k, v in self.capabilities.items()):
            raise RegistryValidationError("capabilities", f"must map some of {', '.join(CAPABILITIES)} to true or "
                                                          f"false, got {self.capabilities!r}")

    def lacks(self, needs: frozenset[str]) -> list[str]:
        """The capabilities among `needs` the model is declared without, in CAPABILITIES' order."""
        return [c for c in CAPABILITIES if c in needs and self.capabilities.get(c) is False]

    def copy(self) -> ModelRecord:
        """An independent copy: callers may change it without touching the registry's view."""
        record = _clone(self)
        record.cost = _clone(self.cost)
        record.capabilities = dict(self.capabilities)
        if self.profile is not None:
            record.profile = _clone(self.profile)
            record.profile.errors = list(self.profile.errors)
            record.profile.counts = list(self.profile.counts)
        return record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRecord:
        values = _known_fields(cls, data)
        values["cost"] = Price.from_dict(values.get("cost") or {})
        if values.get("profile") is not None:
            values["profile"] = Profile.from_dict(values["profile"])
        return cls(**values)


@dataclass
class JobRecord:
    """A profiling job: asks a model the representative prompts and grades the answers."""

    id: str
    model: str
    state: JobState
    done: int
    total: int
    errors: int
    spend: float
    started_at: float
    updated_at: float
    error: str | None = None
    owner: str | None = None
    eta_s: float | None = None
    # Answers stored before this time are asked again (a reprofile); None: every stored good
    # answer counts (a first profiling, resumed).
    since: float | None = None
    # When a paused job resumes by itself (None: only the operator resumes it), and how many
    # times it has already.
    resume_at: float | None = None
    resumes: int = 0
    # The job's own options (`limit`, `seed`, `max_tokens`, `concurrency`, `spend_cap`); keys
    # left out take the gateway's settings.
    options: dict[str, Any] = field(default_factory=dict)
    # llm_judge items of the set left out: no judge model is configured to grade them
    skipped: int = 0
    # Prompts the model refused (a 4xx that is no fault: too long, the demo's "no recorded
    # answer"): stored, never asked again, out of the coverage count; not `errors`.
    declined: int = 0
    # Graded answers the model ended at the job's max_tokens (app/profiling/jobs.py `job_warning`).
    truncated: int = 0
    # The model that grades the job's llm_judge items (the gateway's judge_model when it started),
    # None when it has none to grade.
    judge: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        return cls(**_known_fields(cls, data))


@dataclass
class Answer:
    """One graded answer of a model to one representative prompt (`error` set when it failed or
    could not be graded: such an answer is ungraded and asked again).

    `text` is the model's answer, `grader` the item's grader, `verdict` what the grader said
    beyond the score (the judge's reply texts for `llm_judge` items), `cost` includes the
    judge's `judge_cost`. Records written before these fields existed load with their defaults.
    """

    prompt_id: str
    score: float
    cost: float
    output_tokens: int
    error: str | None = None
    text: str | None = None
    grader: str | None = None
    verdict: str | None = None
    judge_cost: float = 0.0
    answered_at: float = 0.0
    # the upstream answered and refused this prompt (a 4xx that is no fault of the model's
    # upstream: "no recorded answer", a prompt too long): unanswerable, not asked again
    declined: bool = False
    # the model's answer ended at the job's max_tokens (finish_reason "length"): graded as cut
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        return cls(**_known_fields(cls, data))

