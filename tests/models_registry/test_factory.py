"""open_registry picks the backend from the configuration."""
from __future__ import annotations

import pytest

from models_registry.factory import open_registry
from models_registry.records import RegistryValidationError
from models_registry.redis_store import RedisRegistry
from models_registry.sqlite import SQLiteRegistry


@pytest.mark.parametrize("url", [None, ""])
def test_without_a_redis_url_the_registry_is_the_sqlite_file(tmp_path, url):
    registry = open_registry(url, tmp_path / "r.db")
    assert isinstance(registry, SQLiteRegistry) and registry.path == tmp_path / "r.db"


def test_with_a_redis_url_the_registry_is_redis_under_the_given_prefix(tmp_path):
    registry = open_registry("redis://127.0.0.1:6379/0", tmp_path / "r.db", prefix="team-a:")
    assert isinstance(registry, RedisRegistry) and registry.prefix == "team-a:"


def test_a_malformed_redis_url_is_a_validation_error_naming_the_setting(tmp_path):
    with pytest.raises(RegistryValidationError, match="redis_url"):
        open_registry("127.0.0.1:6379", tmp_path / "r.db")
