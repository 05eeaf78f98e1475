"""The HTTP edge of the embedded server: how uvicorn is configured, how request bodies are read
(bounded in size and in time) and decoded, and the one error shape every route answers with.

Limits (deck.toml [serve]):
  read_timeout_s   the longest wait for the next piece of a request: its headers, or the next
                   chunk of its body. An idle or silent connection is closed; a stalled body
                   gets 408.
  body_timeout_s   the longest a JSON body may take in all (a trickle of one byte a second
                   would pass read_timeout_s forever). Blob uploads stream and have no total.
  max_connections  open connections beyond this are answered 503 and closed at once, so a
                   flood cannot exhaust the process's file descriptors or memory.

uvicorn (0.54, h11) has no header timeout: its keep-alive timer starts only after a response,
and `limit_concurrency` answers 503 only once a request's headers have arrived, so a connection
that never sends them is held forever. GuardedH11Protocol adds both.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from engine.config import ServeSettings
from engine.serving.requests import ApiError

KEEP_ALIVE_S = 5  # uvicorn's default: an idle keep-alive connection closes after this
MAX_HEADER_BYTES = 16 * 1024  # h11's default incomplete-event limit, stated here on purpose
# A JSON escape of a UTF-16 surrogate: only then can the decoded body hold a lone surrogate.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class BodyTimeout(Exception):
    """The client stopped sending its request body."""


def error_response(status: int, message: str, kind: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error shape, so its client raises the matching exception."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                        status_code=status, headers=headers)


def api_error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """An ApiError as a response. After 408 or 413 the rest of the body may still be on its
    way and cannot be told apart from a next request: close the connection."""
    extra = {"connection": "close"} if error.status in (408, 413) else {}
    return error_response(error.status, error.message, error.kind, error.code,
                          headers={**(headers or {}), **extra})


def timeout_response() -> JSONResponse:
    # Connection: close, because the rest of the body may still arrive and cannot be parsed.
    return error_response(408, "the request body did not arrive in time", "timeout",
                          headers={"connection": "close"})


# ---- reading bodies ----------------------------------------------------------------------------

async def read_body(request: Request, limit: int, total_timeout_s: float) -> bytes:
    """The whole body, or ApiError 413 (over limit bytes) / 408 (too slow)."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared[:20]) > limit:
        raise ApiError(413, f"request body over {limit} bytes", "invalid_request_error")
    raw = bytearray()
    try:
        async with asyncio.timeout(total_timeout_s):
            async for chunk in request.stream():
                raw.extend(chunk)
                if len(raw) > limit:
                    raise ApiError(413, f"request body over {limit} bytes", "invalid_request_error")
    except (TimeoutError, BodyTimeout):
        raise ApiError(408, "the request body did not arrive in time", "timeout") from None
    return bytes(raw)


async def read_json_object(request: Request, settings: ServeSettings,
                           empty_is: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body as a JSON object, decoded off the event loop; ApiError (4xx) otherwise.
    empty_is: what an empty body means (None: an empty body is an error)."""
    raw = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    if not raw.strip() and empty_is is not None:
        return dict(empty_is)
    return await asyncio.to_thread(decode_json_object, raw)


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON: UTF-8, no NaN/Infinity, finite numbers, no lone surrogates, an object."""
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(400, "the request body is not valid JSON", "invalid_request_error") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_request_error")
    if SURROGATE_ESCAPE.search(text) and not _all_text_encodable(body):
        raise ApiError(400, "the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                            "which is not text", "invalid_request_error")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number too large")
    return value


def _all_text_encodable(body: Any) -> bool:
    """Every string (and key) is valid Unicode text; iterative, since bodies nest deep."""
    pending = [body]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


# ---- the ASGI layer ----------------------------------------------------------------------------

class BodyDeadline:
    """ASGI middleware: each wait for the next chunk of a request body is bounded by
    read_timeout_s; past it, the app's receive() raises BodyTimeout (answered with 408).
    Once the body is complete, receive() is passed through untouched: a streaming response
    waits on it for the client's disconnect, for as long as it streams."""

    def __init__(self, app: Any, read_timeout_s: float) -> None:
        self.app, self.read_timeout_s = app, read_timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def timed_receive() -> Any:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)


async def on_body_timeout(request: Request, error: Exception) -> JSONResponse:
    return timeout_response()


async def on_http_exception(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own 404/405 in OpenAI's shape."""
    status = getattr(error, "status_code", 400)
    detail = getattr(error, "detail", None) or "request refused"
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    return error_response(status, str(detail), kind, headers=getattr(error, "headers", None))


async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
    """A bug: still one JSON line for the client, never a traceback (the log has it)."""
    return error_response(500, f"internal error ({type(error).__name__})", "server_error")


EXCEPTION_HANDLERS = {BodyTimeout: on_body_timeout, HTTPException: on_http_exception,
                      Exception: on_unexpected}


# ---- uvicorn -------------------------------------------------------------------------------------

_BUSY_BODY = json.dumps({"error": {"message": "too many open connections; retry", "type":
                                   "service_unavailable", "param": None, "code": None}}).encode()
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                 b"connection: close\r\ncontent-length: " + str(len(_BUSY_BODY)).encode()
                 + b"\r\n\r\n" + _BUSY_BODY)


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type:
    """uvicorn's h11 protocol with a deadline for each request's headers and a connection cap."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    deadline_s, cap = header_timeout_s, max_connections  # a class body cannot see them by name

    class GuardedH11Protocol(H11Protocol):
        header_timeout_s: float = deadline_s  # read by tests and by the methods below
        max_connections: int = cap
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._header_timer = None
            if len(self.connections) > self.max_connections:
                transport.write(BUSY_RESPONSE)
                transport.close()
                return
            self._await_headers()

        def _await_headers(self) -> None:
            """Arm the deadline for the next request's headers (none is in progress)."""
            self._cancel_header_timer()
            self._idle_cycle = self.cycle
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.cycle is self._idle_cycle and not self.transport.is_closing():
                self.transport.close()  # connection_lost tidies h11's state

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is not None and self.cycle is not self._idle_cycle:
                self._cancel_header_timer()  # the headers arrived: a request is under way

        def on_response_complete(self) -> None:
            super().on_response_complete()
            in_progress = self.cycle is not None and not self.cycle.response_complete
            if not self.transport.is_closing() and not in_progress:
                self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_config(app: Any, settings: ServeSettings) -> Any:
    """The uvicorn.Config the local server runs with (the process module calls this)."""
    import uvicorn

    protocol = guarded_protocol(settings.read_timeout_s, settings.max_connections)
    # loop="asyncio": uvicorn's "auto" picks uvloop when installed (ray[serve] brings it), and
    # the server's timeouts and guards were built and measured on asyncio's loop.
    return uvicorn.Config(app, http=protocol, loop="asyncio", log_level="warning",
                          access_log=False, timeout_graceful_shutdown=30, timeout_keep_alive=KEEP_ALIVE_S,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES)
