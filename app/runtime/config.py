"""All gateway configuration in one place: one YAML file plus `UNIROUTE_*` environment variables.

Precedence, highest first: explicit keyword arguments (tests, the CLI), environment variables,
the YAML file named by `UNIROUTE_CONFIG`, then the defaults below. Nested fields take
`__` in environment variables, e.g. `UNIROUTE_TIMEOUTS__READ_S=30`.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from models_registry.records import validate_base_url, validate_name
from router_core.pricing import Price
from router_core.shipped import DEFAULT_REPSET, DEFAULT_STATE, state_path
from router_core.targets import KINDS, RoutingTarget

# A policy is asked for as `uniroute:<name>`: a name must not read as a number or a target.
_POLICY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Closed(BaseModel):
    """A section of the config (or of a request) that refuses a key it does not know: a
    misspelt key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class PriceIn(_Closed):
    """A model's price as the config file and the admin API take it: per million input/output
    tokens and/or per request (USD or any one unit). Fields left out are 0."""

    input_per_mtok: Amount | None = None
    output_per_mtok: Amount | None = None
    per_request: Amount | None = None

    @model_validator(mode="after")
    def _some_price(self) -> "PriceIn":
        if self.input_per_mtok is None and self.output_per_mtok is None and self.per_request is None:
            raise ValueError("give input_per_mtok and output_per_mtok, or per_request")
        return self

    def to_price(self) -> Price:
        return Price(self.input_per_mtok or 0.0, self.output_per_mtok or 0.0, self.per_request or 0.0)


class CapabilitiesIn(_Closed):
    """What a model takes, as the config file and the admin API declare it (models_registry's
    CAPABILITIES): false for a feature it cannot take, and routing sends it no request using that
    feature; one left out is assumed taken."""

    vision: StrictBool | None = None  # image inputs: chat's `image_url` parts, the Responses API's `input_image`
    tools: StrictBool | None = None  # `tools` (chat's deprecated `functions` too)
    json_schema: StrictBool | None = None  # `response_format` (Responses API: `text.format`) of type json_schema

    def declared(self) -> dict[str, bool]:
        """The capabilities declared, true or false."""
        return self.model_dump(exclude_none=True)


def is_router_name(name: str) -> bool:
    """Whether `name` is the router's own (`uniroute`, `uniroute:<target>`), which no model may take."""
    return name == "uniroute" or name.startswith("uniroute:")


class ModelConfig(_Closed):
    """A model declared in the config file; registered at start if the registry lacks it. Its
    name, base_url, upstream_model and api_key_env are held to the registry's rules here, so that
    a file breaking them stops `serve` in one line rather than failing each worker's start."""

    name: str
    base_url: str
    upstream_model: str | None = Field(None, pattern=r"\S")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    cost: PriceIn = PriceIn(per_request=0.0)
    # {prompt_id: score} of this model on the representative set, as a JSON file: the model is
    # profiled from it without calling the upstream.
    scores_file: str | None = None
    # false: a model the gateway only calls itself, such as the `judge_model`: never routed,
    # listed or served to clients, and not profiled. Applied at every start.
    enabled: bool = True
    # What the model cannot take (false), so that requests using it are routed elsewhere.
    capabilities: CapabilitiesIn | None = None

    @field_validator("name")
    @classmethod
    def _registrable_name(cls, name: str) -> str:
        if is_router_name(name):
            raise ValueError("model names starting with 'uniroute' are reserved for routing")
        return validate_name(name)

    _base_url = field_validator("base_url")(validate_base_url)


class EmbeddingsConfig(_Closed):
    """The upstream `POST /v1/embeddings` goes to: not a routed LLM, so not in the registry.
    Clients ask for it by `name` (or by a router name such as `uniroute`)."""

    name: str = Field(min_length=1)
    base_url: str
    upstream_model: str | None = None
    api_key_env: str | None = None
    cost: PriceIn = PriceIn(per_request=0.0)

    _base_url = field_validator("base_url")(validate_base_url)


class TargetFields(_Closed):
    """At most one routing target: a cost weight λ, a budget (expected cost per request, in the
    models' cost unit) or a quality (fraction of the best single model's expected score)."""

    cost_weight: float | None = Field(None, ge=0, allow_inf_nan=False)
    budget: float | None = Field(None, ge=0, allow_inf_nan=False)
    quality: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)

    @field_validator(*KINDS, mode="before")
    @classmethod
    def _not_a_boolean(cls, value: object) -> object:
        # pydantic reads true as 1.0: `cost_weight: true` would route at λ = 1, a target nobody set
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @model_validator(mode="after")
    def _at_most_one(self) -> "TargetFields":
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one target, not {' and '.join(given)}")
        return self

    def target(self, policy: str | None = None) -> RoutingTarget | None:
        """The target given, if any."""
        for kind in KINDS:
            value = getattr(self, kind)
            if value is not None:
                return RoutingTarget(kind, float(value), policy)
        return None


class PolicyConfig(TargetFields):
    """A named policy (`uniroute:<name>`): exactly one target."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "PolicyConfig":
        if self.target() is None:
            raise ValueError("a policy needs one of cost_weight, budget, quality")
        return self


DEFAULT_POLICIES = {
    "economy": PolicyConfig(quality=0.9),
    "balanced": PolicyConfig(quality=0.97),
    "best": PolicyConfig(cost_weight=0.0),
}


class BudgetConfig(_Closed):
    """The online budget guard: a spend target per time window, per client key when keys are
    configured (else for the whole gateway). No target: the guard is off."""

    target: float | None = Field(None, gt=0, allow_inf_nan=False)
    window_s: float = Field(3600.0, gt=0)


class CaptureConfig(_Closed):
    """Opt-in capture of routed prompts' routing texts (README, "Capture"): off while
    `sample_rate` is 0. At most `max_prompts` are kept, none older than `retention_days`."""

    sample_rate: float = Field(0.0, ge=0, le=1)
    max_prompts: int = Field(10_000, ge=1)
    retention_days: float = Field(30.0, gt=0)


class Timeouts(_Closed):
    """Upstream timeouts in seconds. `read_s` bounds every wait for data: from sending the request
    to the first byte, and between chunks."""

    connect_s: float = Field(3.0, gt=0)
    read_s: float = Field(60.0, gt=0)
    # Accepted so that older config files still load; bounds nothing (README: Configuration).
    write_s: float = Field(10.0, gt=0)
    pool_s: float = Field(5.0, gt=0)


class Settings(BaseSettings):
    """The gateway's settings; see README's Configuration table for each field."""

    model_config = SettingsConfigDict(
        env_prefix="UNIROUTE_", env_nested_delimiter="__", extra="ignore"
    )
    # The YAML file read, when `load_settings` names one (else UNIROUTE_CONFIG's).
    config_file: ClassVar[str | None] = None

    host: str = "127.0.0.1"
    # 1-65535: the socket layer wraps a larger number modulo 65536 (99999 listened on 34463
    # while the log said 99999)
    port: int = Field(8000, ge=1, le=65535)
    # Worker processes `uniroute serve` runs on the one listening socket (README: Workers); None:
    # one per CPU this process may run on. An app built in-process (create_app) is one worker.
    workers: int | None = Field(None, ge=1, le=256)
    # How long an idle client connection stays open. Longer than clients keep theirs (httpx and
    # so the openai SDK: 5 s): with equal times, a client reusing a connection as the server
    # closes it loses its request (seen as ReadError in the soak benchmark at uvicorn's 5 s).
    keep_alive_s: int = Field(75, ge=1)
    # How long a stopping gateway (SIGTERM, Ctrl-C) lets the requests in flight finish before it
    # ends them and stops. An orchestrator kills what outlives its own grace period (Kubernetes:
    # terminationGracePeriodSeconds, 30 s by default), requests cut silently and the shutdown
    # (profiling jobs let go, capture written) undone: keep this well under it (README: Workers).
    drain_s: float = Field(20.0, gt=0, allow_inf_nan=False)
    # Router state (clusters, learned map) built by `uniroute build-state`: a folder, or the name
    # of a shipped state ("fast", "accurate"; see router_core.shipped).
    state_dir: str = DEFAULT_STATE
    cache_dir: str = ".uniroute/cache"
    repset_path: str = str(DEFAULT_REPSET)
    sqlite_path: str = ".uniroute/registry.db"
    redis_url: str | None = None
    redis_prefix: str = "uniroute:"
    # Micro-batching of prompt embeddings: prompts per embedding call, and how long a prompt may
    # wait for others (0: never held back; a batch forms from what queued while the model ran).
    embed_max_batch: int = Field(64, ge=1, le=1024)
    embed_batch_wait_ms: float = Field(0.0, ge=0, le=50)
    # torch threads for the embedding model. One leaves the other core to the event loop and
    # the network; two threads on two busy cores ran a prompt 7x slower here (oversubscription).
    embed_threads: int | None = Field(1, ge=1)

    # λ for the model name `uniroute`. λ weighs an expected cost of `cost_scale` per request (the
    # models' cost unit) as one full unit of error rate, whichever models are registered.
    default_cost_weight: float = Field(0.4, ge=0, allow_inf_nan=False)
    cost_scale: float = Field(0.01, gt=0, allow_inf_nan=False)
    # The support guard: a model whose predicted error for a prompt rests on fewer labelled
    # representative prompts is ranked after those with more (None: the router state's prior).
    min_support: float | None = Field(None, ge=0, allow_inf_nan=False)
    # Named targets, asked for as `uniroute:<name>` and listed in /v1/models.
    policies: dict[str, PolicyConfig] = DEFAULT_POLICIES
    budget: BudgetConfig = BudgetConfig()
    api_keys: Annotated[list[str], NoDecode] = []
    admin_key: str | None = None
    # The environment variables the admin API may name as a model's `api_key_env` (shell-style
    # patterns), besides those the config file's models name: the gateway sends the variable's value
    # to the model's base_url, which the admin chooses too, so any variable named (a cloud secret,
    # a database password) would go to whatever server the admin token's holder points it at.
    admin_key_envs: Annotated[list[str], NoDecode] = ["*_API_KEY"]

    timeouts: Timeouts = Timeouts()
    # Bounds a whole request's upstream work: retries and fallbacks included.
    deadline_s: float = Field(120.0, gt=0)
    retries: int = Field(1, ge=0, le=5)
    # The longest Retry-After (an upstream's 429 or 503 saying when to come back) waited out before
    # the same model is asked again; a longer one sends the request to the next model at once.
    # Either way the model is cooled down for as long as its upstream asked (README: Upstream faults).
    retry_after_max_s: float = Field(2.0, ge=0, allow_inf_nan=False)
    max_fallbacks: int = Field(2, ge=0)
    cooldown_failures: int = Field(3, ge=1)
    cooldown_s: float = Field(30.0, ge=0)
    max_body_bytes: int = Field(20_000_000, gt=0)  # room for base64 photos in vision requests
    max_prompt_chars: int = Field(400_000, gt=0)
    # Used for a model's expected cost until its profile has measured its answers' length.
    expected_output_tokens: int = Field(256, gt=0)

    # Profiling jobs: prompts in flight per job, answer length asked for, optional spend cap
    # per job (in the models' cost unit), and the registered model grading llm_judge items.
    profile_concurrency: int = Field(8, ge=1, le=256)
    profile_max_tokens: int = Field(512, ge=1)
    profile_spend_cap: float | None = Field(None, gt=0)
    judge_model: str | None = None
    # Profiling through outages (README: Auditing a profile): a failed prompt is asked again
    # (at most profile_attempts times a pass) after a wait doubling from profile_backoff_s up to
    # profile_backoff_max_s; profile_pause_after failures in a row pause the job, which resumes
    # by itself after profile_resume_after_s (0: only the operator resumes it), at most
    # profile_auto_resumes times. A job's profile routes once it has graded profile_min_coverage
    # of its prompts and, in every cluster, profile_min_cluster_coverage of their weight there.
    profile_backoff_s: float = Field(1.0, ge=0)
    profile_backoff_max_s: float = Field(30.0, ge=0)
    profile_attempts: int = Field(3, ge=1)
    profile_pause_after: int = Field(10, ge=1)
    profile_resume_after_s: float = Field(60.0, ge=0)
    profile_auto_resumes: int = Field(5, ge=0)
    profile_min_coverage: float = Field(0.9, gt=0, le=1)
    profile_min_cluster_coverage: float = Field(0.5, ge=0, le=1)
    # How long a process's lock (a profiling job's, a state migration's, the start-up's) lasts
    # unless refreshed, every third of it: a dead replica's job or migration is taken over by
    # another within about this long, twice this at worst.
    lock_ttl_s: float = Field(30.0, gt=0)

    models: list[ModelConfig] = []
    # Where /v1/embeddings goes when the request names no registered model.
    embeddings_model: EmbeddingsConfig | None = None
    capture: CaptureConfig = CaptureConfig()
    # A cluster with fewer representative items than this is flagged (GET /admin/state, start-up log).
    coverage_floor: int = Field(15, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("state_dir")
    @classmethod
    def _shipped_state(cls, value: str) -> str:
        return str(state_path(value))

    @field_validator("api_keys", "admin_key_envs", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # An env var holds them comma-separated; the YAML file holds a list.
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("models")
    @classmethod
    def _one_model_per_name(cls, value: list[ModelConfig]) -> list[ModelConfig]:
        # two under one name were both registered, each start's last one winning
        names = [m.name for m in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"each model name may be declared once: {', '.join(twice)} declared more than once")
        return value

    @field_validator("policies")
    @classmethod
    def _policy_names(cls, value: dict[str, PolicyConfig]) -> dict[str, PolicyConfig]:
        for name in value:
            if not _POLICY_NAME.fullmatch(name) or name in KINDS or _is_number(name):
                raise ValueError(f"policy name {name!r} must be a word (letters, digits, _ . -, starting "
                                 f"with a letter) that is not a number or one of {', '.join(KINDS)}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _Environment(settings_cls)]
        config_file = settings_cls.config_file or os.environ.get("UNIROUTE_CONFIG")
        if config_file:
            sources.append(_ConfigFile(settings_cls, config_file))
        return tuple(sources)


class ConfigError(ValueError):
    """Settings the gateway cannot start with, said in a line for the operator."""


class _Environment(EnvSettingsSource):
    """The UNIROUTE_* variables, a list or mapping setting's refused naming the variable when it
    is not JSON (pydantic-settings' own error names neither the variable nor what is wrong)."""

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:
            variable = f"{self.env_prefix}{field_name}".upper()
            raise ConfigError(f"invalid settings: {variable}: not valid JSON ({exc}); a list or mapping "
                              f"setting is given in JSON") from None


class _ConfigFile(YamlConfigSettingsSource):
    """The YAML config file, refused when it is missing, unreadable, not a mapping or names a
    setting that does not exist: each would otherwise leave the gateway on defaults unsaid (the
    settings ignore unknown names, as unrelated UNIROUTE_* variables must not stop a start)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str) -> None:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such config file")
        self._known = list(settings_cls.model_fields)  # the file is read by super().__init__
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{file_path}: cannot be read as YAML: {' '.join(str(exc).split())}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file_path}: is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{file_path}: must be a mapping of settings, not a {type(data).__name__}")
        for key in data:
            if key not in self._known:
                close = difflib.get_close_matches(str(key), self._known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{file_path}: unknown setting {key!r}{hint}")
        return data


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def usable_cpus() -> int:
    """CPUs this process may run on: its CPU affinity where the OS tells it, else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def worker_count(settings: Settings) -> int:
    """The worker processes `settings` ask for: `workers`, else one per usable CPU."""
    return settings.workers if settings.workers is not None else usable_cpus()


def load_settings(config_file: str | None = None, **overrides: object) -> Settings:
    """Settings from `config_file` (else UNIROUTE_CONFIG's file), the environment and `overrides`,
    leaving the process environment as it is; ConfigError, one line, for settings that cannot be
    used."""
    cls = Settings if config_file is None else type("Settings", (Settings,), {"config_file": config_file})
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None
    except SettingsError as exc:
        # It wraps what a source raised: _Environment's ConfigError, or a line of its own.
        raise (exc.__cause__ if isinstance(exc.__cause__, ConfigError) else ConfigError(str(exc))) from None
