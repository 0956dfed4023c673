"""Client keys for the OpenAI endpoints and the admin key for /admin, both as Bearer tokens.

Keys are compared in constant time. With no client keys configured the OpenAI endpoints are
open (the gateway warns at start); with no admin key the admin API is off.
"""
from __future__ import annotations

import hmac

from fastapi import Request

from app.api.errors import APIError


def bearer(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(token: str | None, keys: list[str]) -> bool:
    """Constant-time membership: every key is compared, whatever matches first."""
    if token is None:
        return False
    supplied = token.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(supplied, key.encode())
    return found


async def require_client_key(request: Request) -> None:
    """401 unless the request carries a configured client key (or none are configured)."""
    keys = request.app.state.gateway.settings.api_keys
    if keys and not key_matches(bearer(request), keys):
        raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                       code="invalid_api_key")


async def require_admin_key(request: Request) -> None:
    """404 while the admin API is off; 401 unless the request carries the admin key."""
    admin_key = request.app.state.gateway.settings.admin_key
    if not admin_key:
        raise APIError(404, "the admin API is off: set UNIROUTE_ADMIN_KEY to enable it", code="admin_disabled")
    if not key_matches(bearer(request), [admin_key]):
        raise APIError(401, "Incorrect or missing admin key: send 'Authorization: Bearer <admin key>'",
                       code="invalid_admin_key")
