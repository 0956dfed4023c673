"""All gateway configuration in one place: one YAML file plus `UNIROUTE_*` environment variables.

Precedence, highest first: explicit keyword arguments (tests, the CLI), environment variables,
the YAML file named by `UNIROUTE_CONFIG`, then the defaults below. Nested fields take
`__` in environment variables, e.g. `UNIROUTE_TIMEOUTS__READ_S=30`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

RESOURCES = Path(__file__).parent / "resources"


class CostConfig(BaseModel):
    """A model's price: per million input/output tokens, or per request (USD or any one unit)."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    per_request: float = Field(0.0, ge=0)


class ModelConfig(BaseModel):
    """A model declared in the config file; registered at start if the registry lacks it."""

    name: str
    base_url: str
    upstream_model: str | None = None
    api_key_env: str | None = None
    cost: CostConfig = CostConfig()
    # {prompt_id: score} of this model on the representative set, as a JSON file: the model is
    # profiled from it without calling the upstream.
    scores_file: str | None = None


class Timeouts(BaseModel):
    """Upstream timeouts in seconds. `read_s` bounds the wait for the first byte and between chunks."""

    connect_s: float = Field(3.0, gt=0)
    read_s: float = Field(60.0, gt=0)
    write_s: float = Field(10.0, gt=0)
    pool_s: float = Field(5.0, gt=0)


class Settings(BaseSettings):
    """The gateway's settings; see README's Configuration table for each field."""

    model_config = SettingsConfigDict(
        env_prefix="UNIROUTE_", env_nested_delimiter="__", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8000
    # Router state (clusters, learned map) built by `uniroute build-state`.
    state_dir: str = str(RESOURCES / "state")
    cache_dir: str = ".uniroute/cache"
    repset_path: str = str(RESOURCES / "repset" / "routerbench_mc.jsonl")
    sqlite_path: str = ".uniroute/registry.db"
    redis_url: str | None = None
    redis_prefix: str = "uniroute:"

    default_cost_weight: float = Field(0.2, ge=0)
    api_keys: Annotated[list[str], NoDecode] = []
    admin_key: str | None = None

    timeouts: Timeouts = Timeouts()
    # Bounds a whole request's upstream work: retries and fallbacks included.
    deadline_s: float = Field(120.0, gt=0)
    retries: int = Field(1, ge=0, le=5)
    max_fallbacks: int = Field(2, ge=0)
    cooldown_failures: int = Field(3, ge=1)
    cooldown_s: float = Field(30.0, ge=0)
    max_body_bytes: int = Field(2_000_000, gt=0)
    max_prompt_chars: int = Field(400_000, gt=0)
    # Used for a model's expected cost until its profile has measured its answers' length.
    expected_output_tokens: int = Field(256, gt=0)

    # Profiling jobs: prompts in flight per job, answer length asked for, optional spend cap
    # per job (in the models' cost unit), and the registered model grading llm_judge items.
    profile_concurrency: int = Field(8, ge=1, le=256)
    profile_max_tokens: int = Field(512, ge=1)
    profile_spend_cap: float | None = Field(None, gt=0)
    judge_model: str | None = None

    models: list[ModelConfig] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # An env var holds keys comma-separated; the YAML file holds a list.
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
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
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("UNIROUTE_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)
