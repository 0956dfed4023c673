"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with the right status,
for errors raised here at the edge (APIError) and for the gateway's domain errors (GatewayError)."""
from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.errors import ErrorKind, GatewayError, error_body

log = logging.getLogger("uniroute")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


_STATUS: dict[ErrorKind, int] = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "unavailable": 503,
    "rate_limited": 429,
    "upstream": 502,
    "upstream_timeout": 504,
}


# The longest Retry-After an SDK is left to wait out inside one call: the Python openai SDK's own
# limit (past it, it does not ask again). The Node openai SDK (6.x) waits out any Retry-After,
# however long, before asking again, its caller stuck in the call; past this limit the answer says
# `x-should-retry: false` (both SDKs obey it), so the call fails at once with the Retry-After.
SDK_RETRY_AFTER_MAX_S = 120


class APIError(Exception):
    """An error the client should see, in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        final: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "api_error")
        self.param = param
        self.code = code
        # Seconds the client should wait before asking again: sent as Retry-After.
        self.retry_after = retry_after
        # Asking again would only repeat what the gateway did: sent as `x-should-retry: false`.
        self.final = final

    def body(self) -> dict:
        """The JSON body OpenAI clients expect."""
        return error_body(self.message, self.type, self.param, self.code)


def from_domain(err: GatewayError) -> APIError:
    """The HTTP error for a domain error."""
    return APIError(_STATUS[err.kind], err.message, param=err.param, code=err.code, retry_after=err.retry_after,
                    final=err.final)


def error_response(err: APIError) -> JSONResponse:
    """The HTTP response for an APIError; its `retry_after` as a Retry-After header in whole seconds,
    rounded up (RFC 9110 has no fractions; the openai SDK waits that long on a 429 or 503 before
    asking again, rather than its own short backoff), with `x-should-retry: false` when it is
    longer than SDK_RETRY_AFTER_MAX_S, or when the error is `final`."""
    headers = {}
    if err.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if err.retry_after is not None:
        headers["Retry-After"] = str(math.ceil(err.retry_after))
        if err.retry_after > SDK_RETRY_AFTER_MAX_S:
            headers["x-should-retry"] = "false"
    if err.final:
        headers["x-should-retry"] = "false"
    return JSONResponse(err.body(), status_code=err.status, headers=headers or None)


def known_error_response(err: APIError | GatewayError) -> JSONResponse:
    """The HTTP response for an error raised at the edge or in the domain."""
    return error_response(err if isinstance(err, APIError) else from_domain(err))


# nginx's "client closed request": nobody reads the answer, but the request count and the access
# log tell a client that left from a gateway error (a 500 there would page someone).
CLIENT_CLOSED = 499


def client_closed_response(method: str, path: str) -> JSONResponse:
    """The answer to a request whose client hung up before it was answered (while its body was
    arriving, or while the upstream was asked)."""
    log.info("the client closed the connection before it was answered: %s %s", method, path)
    return error_response(APIError(CLIENT_CLOSED, "the client closed the connection before it was answered",
                                   type="invalid_request_error", code="client_closed_request"))


# What a client whose request the stopping gateway ended is told (its drain, `drain_s`, is over).
# Not final: another replica, or this one restarted, can take the request again, and the openai
# SDK (like nginx's `proxy_next_upstream http_503`) sends a 503 again.
STOPPED = "the gateway is shutting down and stopped this request before its answer was complete"


def stopped_response() -> JSONResponse:
    """The 503 for a request the stopping server ended before anything was answered."""
    return known_error_response(GatewayError("unavailable", STOPPED, code="shutting_down"))


def unexpected_error_response(method: str, path: str, exc: BaseException) -> JSONResponse:
    """The 500 for an error nobody expected, logged with its traceback."""
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(APIError(500, "internal error in the gateway", type="api_error"))


def validation_error(errors: list[dict]) -> APIError:
    """The 400 for pydantic's `errors` (non-empty): the first one, named by its parameter. A
    field that takes one of several types fails once per type, each error's location ending in
    the type's name (`messages.0.content.str`, `...list[any]`): those are one parameter, whose
    message says every type it could have been."""
    first = errors[0]
    loc = tuple(p for p in first.get("loc", ()) if p != "body")
    message = first.get("msg", "invalid request")
    # One value's failures against each type: the same input, locations differing in the last part.
    branches = [e for e in errors if e.get("type") != "missing" and e.get("input") is first.get("input")
                and len(e.get("loc", ())) == len(first.get("loc", ()))
                and tuple(e.get("loc", ()))[:-1] == tuple(first.get("loc", ()))[:-1]]
    if len(loc) > 1 and len(branches) > 1:
        loc = loc[:-1]
        message = " or ".join(dict.fromkeys(e.get("msg", "") for e in branches))
    param = ".".join(str(p) for p in loc) or None
    return APIError(400, f"{param}: {message}" if param else message, param=param, code="invalid_value")


def is_json_type(content_type: str | None) -> bool:
    """Whether a Content-Type header announces JSON (`application/json`, `…+json`, any parameters)."""
    if not content_type:
        return False
    subtype = content_type.split(";", 1)[0].strip().lower().rpartition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def unserved_message(method: str, path: str, exc: StarletteHTTPException) -> str:
    """What a client is told of a request no route serves: that the gateway does not serve it,
    and for a 405 which methods its path takes. The SDK method of an OpenAI endpoint the gateway
    lacks (`responses.compact` is a POST on a path shaped like a stored response's) got a bare
    "Method Not Allowed", as if the SDK had used the wrong method. (These words name no model: a
    gateway in front of another tells a wrong URL from an unknown model by that, faults.py
    `names_model`.)"""
    if exc.status_code not in (404, 405):
        return str(exc.detail)
    message = f"{exc.detail}: the gateway does not serve {method} {path}"
    allowed = (exc.headers or {}).get("Allow")
    return f"{message} (this path takes {allowed})" if exc.status_code == 405 and allowed else message


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the gateway in OpenAI's format, including FastAPI's own."""

    @app.exception_handler(ClientDisconnect)
    async def _client_closed(request: Request, _: ClientDisconnect) -> JSONResponse:
        return client_closed_response(request.method, request.url.path)

    @app.exception_handler(APIError)
    @app.exception_handler(GatewayError)
    async def _known_error(_: Request, exc: APIError | GatewayError) -> JSONResponse:
        return known_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        content_type = request.headers.get("content-type")
        if tuple(first.get("loc", ())) == ("body",) and not is_json_type(content_type):
            # FastAPI reads a body as JSON only when its Content-Type says so (curl -d sends
            # a form type; some clients send none): say that, rather than "not an object".
            return error_response(APIError(
                400, f"send the body as JSON with the header Content-Type: application/json "
                     f"(this request has {f'Content-Type: {content_type}' if content_type else 'no Content-Type'})",
                code="unsupported_content_type"))
        return error_response(validation_error(exc.errors()) if exc.errors() else APIError(400, "invalid request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # A client's mistake (a wrong method, say) is an invalid request; the headers Starlette
        # chose (a 405's Allow) go with it.
        kind = "invalid_request_error" if 400 <= exc.status_code < 500 else None
        message = unserved_message(request.method, request.url.path, exc)
        response = error_response(APIError(exc.status_code, message, type=_TYPES.get(exc.status_code, kind)))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(request.method, request.url.path, exc)
