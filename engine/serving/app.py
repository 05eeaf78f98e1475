"""The OpenAI-compatible HTTP API (starlette), /health, /metrics and the control routes.

Each response names the version that produced it in the X-Modeldeck-Version header: a request
is bound to one version when it is admitted and finishes there, even if a deploy switches the
active version meanwhile. During a rollout the host picks the version (the candidate with the
rollout's weight, sticky on X-Session-Id), and a shadow copy of a live request runs on the
candidate in the background: its answer is compared with the live one and dropped.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.config import ServeSettings
from engine.errors import BadInput
from engine.serving.arrivals import Arrival
from engine.serving.host import ModelHost, ServedVersion
from engine.serving.rollout_routes import rollout_routes
from engine.serving.http import (EXCEPTION_HANDLERS, BodyDeadline, api_error_response,
                                 error_response, read_json_object)
from engine.serving.requests import (ApiError, CompletionJob, parse_chat, parse_completion,
                                     stream_flags)
from engine.runstate import TOKEN_HEADER, VERSION_HEADER
from engine.serving.scheduler import Sequence
from engine.serving.work import QueueFull, SamplingParams, SchedulerClosed, TokenEvent
from engine.validate import MAX_INT64

SESSION_HEADER = "X-Session-Id"
SHADOW_WAIT_S = 300.0  # the longest a shadow copy waits for its live answer to compare with

# (check_token, serve settings) -> routes; check_token(request) is None when the token is right
ExtraRoutes = Callable[[Callable[[Request], Response | None], ServeSettings], list[Route]]
DISCONNECT_CHECK_S = 0.25  # how often a waiting non-streamed request looks for its client


def build_app(host: ModelHost, control_token: str | Callable[[], str | None],
              api_key: str | None, on_stop: Callable[[], None],
              extra_routes: ExtraRoutes | None = None) -> Starlette:
    """extra_routes(check_token, settings): more routes to mount, guarded by the same control
    token (the deck's entry point, engine.targets.local, passes the receiving routes other decks
    push versions through; the server itself knows nothing of targets). control_token: the
    token, or a function giving the current one (the token file, so a rotation needs no restart)."""
    api = _Api(host, control_token, api_key, on_stop)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/control/deploy", api.control_deploy, methods=["POST"]),
        Route("/control/stop", api.control_stop, methods=["POST"]),
        *rollout_routes(host, api._check_token),
    ]
    if extra_routes is not None:
        routes += extra_routes(api._check_token, host.settings)
    middleware = [Middleware(BodyDeadline, read_timeout_s=host.settings.read_timeout_s)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)


class _Api:
    def __init__(self, host: ModelHost, control_token: str | Callable[[], str | None],
                 api_key: str | None, on_stop: Callable[[], None]) -> None:
        self.host, self.control_token, self.api_key, self.on_stop = host, control_token, api_key, on_stop
        self._shadow_tasks: set[asyncio.Task] = set()

    # ---- plain routes --------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        active = self.host.active
        if active is None:
            return JSONResponse({"status": "no-model", "version": None}, status_code=503)
        running, waiting = active.scheduler.load
        return JSONResponse({"status": "ok", "version": active.ref, "running": running,
                             "waiting": waiting}, headers={VERSION_HEADER: active.ref})

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.host.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def models(self, request: Request) -> Response:
        if (denied := self._check_api_key(request)) is not None:
            return denied
        active = self.host.active
        data = [] if active is None else [{"id": active.ref, "object": "model", "created": 0,
                                           "owned_by": "modeldeck"}]
        return JSONResponse({"object": "list", "data": data})

    # ---- generation ----------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, parse_completion, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, parse_chat, chat=True)

    async def _generate(self, request: Request, parse: Callable, chat: bool) -> Response:
        arrived_at = time.monotonic()  # the latency clock starts here, as the client's does
        if (denied := self._check_api_key(request)) is not None:
            return denied
        # Counted as arriving until queued, so an idle scheduler waits for it (arrivals.py).
        with self.host.arrivals.arriving(_client(request)) as arrival:
            try:
                body = await read_json_object(request, self.host.settings)
                stream, include_usage = stream_flags(body)
                admitted = await self._submit(body, parse, request.headers.get(SESSION_HEADER),
                                              arrived_at, arrival)
            except ApiError as error:
                return api_error_response(error)
        served, sequence, events = admitted.served, admitted.sequence, admitted.events
        try:  # from here a sequence is queued: whatever goes wrong must free it
            job = CompletionJob(chat=chat, version_ref=served.ref, created=int(time.time()),
                                request_id=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}")
            headers = {VERSION_HEADER: served.ref}
            shadow = self._start_shadow(admitted)
            if stream:
                # The background task also runs when the client left before the first chunk,
                # when the generator's own `finally` never does.
                return StreamingResponse(self._stream(job, sequence, events, include_usage, shadow),
                                         media_type="text/event-stream", headers=headers,
                                         background=BackgroundTask(sequence.cancel))
            return await self._complete(request, job, sequence, events, headers, shadow)
        except BaseException:
            sequence.cancel()
            raise

    async def _submit(self, body: dict[str, Any], parse: Callable, session_id: str | None,
                      arrived_at: float, arrival: Arrival) -> "_Admitted":
        events: asyncio.Queue[TokenEvent] = asyncio.Queue()
        deliver = _deliverer(events)
        for _ in range(3):  # a deploy may retire the version between reading and submitting
            served = self.host.pick(session_id)
            if served is None:
                raise ApiError(503, "no model is deployed to this server", "service_unavailable")
            # Rendering a chat template and tokenizing a prompt of up to max_body_bytes take
            # long enough to stall every other connection: do it in a worker thread.
            prompt_ids, params = await asyncio.to_thread(parse, body, served.loaded.tokenizer,
                                                         self.host.settings)
            try:
                sequence = served.scheduler.submit(prompt_ids, params, deliver, arrived_at,
                                                   arrival)
                return _Admitted(served, sequence, events, prompt_ids, params)
            except SchedulerClosed:
                continue
            except QueueFull as error:
                self.host.metrics.count_rejection(served.ref, "rejected")
                raise ApiError(429, f"server busy: {error}", "rate_limit_exceeded") from None
            except BadInput as error:
                raise ApiError(400, str(error), "invalid_request_error",
                               "context_length_exceeded") from None
        raise ApiError(503, "the server is switching versions; retry", "service_unavailable")

    def _start_shadow(self, admitted: "_Admitted") -> "asyncio.Future[str | None] | None":
        """Mirror this live request to the candidate when the rollout's shadow share says so;
        returns the future the live path fills with its answer (None: no shadow copy)."""
        candidate = self.host.shadow_copy(admitted.served)
        if candidate is None:
            return None
        live_answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(_run_shadow(self.host, candidate, admitted, live_answer))
        self._shadow_tasks.add(task)  # a reference, so the task is not collected mid-run
        task.add_done_callback(self._shadow_tasks.discard)
        return live_answer

    async def _complete(self, request: Request, job: CompletionJob, sequence: Sequence,
                        events: asyncio.Queue, headers: dict[str, str],
                        shadow: "asyncio.Future[str | None] | None" = None) -> Response:
        pieces: list[str] = []
        event = TokenEvent("", "cancelled")
        watcher = asyncio.create_task(_cancel_when_disconnected(request, sequence))
        try:
            while (event := await events.get()).finish_reason is None:
                pieces.append(event.text)
            if event.finish_reason == "cancelled":  # the client went away: nobody reads this
                return Response(status_code=499, headers=headers)
        finally:
            watcher.cancel()
            sequence.cancel()  # no-op when finished; frees the slot if this task was cancelled
            _settle(shadow, "".join(pieces) if event.finish_reason in ("stop", "length") else None)
        if event.finish_reason == "error":
            return error_response(500, f"generation failed: {event.text}", "server_error",
                                  headers=headers)
        return JSONResponse(job.full_response("".join(pieces), event), headers=headers)

    async def _stream(self, job: CompletionJob, sequence: Sequence, events: asyncio.Queue,
                      include_usage: bool,
                      shadow: "asyncio.Future[str | None] | None" = None) -> AsyncIterator[str]:
        pieces: list[str] = []
        try:
            if job.chat:
                yield _sse(job.chunk(None, None, role=True))
            while (event := await events.get()).finish_reason is None:
                pieces.append(event.text)
                yield _sse(job.chunk(event.text, None))
            _settle(shadow, "".join(pieces) if event.finish_reason in ("stop", "length") else None)
            if event.finish_reason == "error":
                yield _sse({"error": {"message": f"generation failed: {event.text}",
                                      "type": "server_error", "param": None, "code": None}})
                return
            yield _sse(job.chunk("", event.finish_reason))
            if include_usage:
                yield _sse(job.usage_chunk(event))
            yield "data: [DONE]\n\n"
        finally:
            sequence.cancel()  # the client went away (or we finished): free the slot
            _settle(shadow, None)

    # ---- control -------------------------------------------------------------------------

    async def control_deploy(self, request: Request) -> Response:
        if (denied := self._check_token(request)) is not None:
            return denied
        try:
            body = await read_json_object(request, self.host.settings)
        except ApiError as error:
            return api_error_response(error)
        if self.host.candidate is not None:
            return error_response(409, "a rollout is in progress; abort it first "
                                       "(`modeldeck rollout abort`)", "conflict")
        model, version = body.get("model"), body.get("version")
        if (not isinstance(model, str) or not model or isinstance(version, bool)
                or not isinstance(version, int) or not 1 <= version <= MAX_INT64):
            return error_response(400, "expected {\"model\": a name, \"version\": a positive "
                                       "integer}", "invalid_request_error")
        outcome = await asyncio.to_thread(self.host.swap_to, model, version)
        return JSONResponse(outcome.to_dict())

    async def control_stop(self, request: Request) -> Response:
        if (denied := self._check_token(request)) is not None:
            return denied
        try:  # no fields yet; a body that is there must still be a JSON object
            await read_json_object(request, self.host.settings, empty_is={})
        except ApiError as error:
            return api_error_response(error)
        self.on_stop()
        return JSONResponse({"stopping": True})

    # ---- checks --------------------------------------------------------------------------

    def _check_api_key(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if hmac.compare_digest(supplied.encode(), self.api_key.encode()):
            return None
        if self._check_token(request) is None:  # a pushing deck's gate (it holds the control token)
            return None
        return error_response(401, "invalid or missing API key", "invalid_request_error",
                              "invalid_api_key")

    def _check_token(self, request: Request) -> Response | None:
        supplied = request.headers.get(TOKEN_HEADER, "")
        token = self.control_token() if callable(self.control_token) else self.control_token
        if supplied and token and hmac.compare_digest(supplied.encode(), token.encode()):
            return None
        return error_response(403, "control routes need the server's control token",
                              "permission_error")


@dataclass(frozen=True)
class _Admitted:
    """A request queued on one version, with what a shadow copy of it needs."""

    served: ServedVersion
    sequence: Sequence
    events: asyncio.Queue
    prompt_ids: list[int]
    params: SamplingParams


def _client(request: Request) -> str | None:
    """The request's connection ("host:port"): a client that loops comes back on it."""
    return f"{request.client.host}:{request.client.port}" if request.client else None


def _deliverer(events: asyncio.Queue) -> Callable[[TokenEvent], None]:
    loop = asyncio.get_running_loop()

    def deliver(event: TokenEvent) -> None:  # called from the scheduler's thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    return deliver


def _settle(shadow: "asyncio.Future[str | None] | None", answer: str | None) -> None:
    if shadow is not None and not shadow.done():
        shadow.set_result(answer)


async def _run_shadow(host: ModelHost, candidate: ServedVersion, admitted: _Admitted,
                      live_answer: "asyncio.Future[str | None]") -> None:
    """Run the copy on the candidate, record its latency and its agreement with the live answer
    (temperature 0 only: sampled answers differ by design), drop its text. A refused copy (full
    queue, candidate unloaded) is simply not run: no client waits on it."""
    events: asyncio.Queue[TokenEvent] = asyncio.Queue()
    started = time.monotonic()
    try:
        sequence = candidate.scheduler.submit(admitted.prompt_ids, admitted.params,
                                              _deliverer(events))
    except (SchedulerClosed, QueueFull, BadInput):
        return
    pieces: list[str] = []
    try:
        while (event := await events.get()).finish_reason is None:
            pieces.append(event.text)
    finally:
        sequence.cancel()
    if event.finish_reason not in ("stop", "length"):
        return
    latency = time.monotonic() - started
    try:
        live = await asyncio.wait_for(asyncio.shield(live_answer), SHADOW_WAIT_S)
    except TimeoutError:
        live = None
    overlap = None
    if live is not None and admitted.params.temperature == 0:
        tokenizer = candidate.loaded.tokenizer
        overlap = token_overlap(tokenizer("".join(pieces), add_special_tokens=False).input_ids,
                                tokenizer(live, add_special_tokens=False).input_ids)
    host.record_shadow(latency, overlap)


def token_overlap(ours: list[int], theirs: list[int]) -> float:
    """Share of positions where the two token sequences agree (1.0: the same answer)."""
    longest = max(len(ours), len(theirs))
    if longest == 0:
        return 1.0
    return sum(a == b for a, b in zip(ours, theirs)) / longest


async def _cancel_when_disconnected(request: Request, sequence: Sequence) -> None:
    """A non-streamed request learns of a dropped client only by asking: ask every so often,
    and free the slot when the client is gone."""
    while True:
        await asyncio.sleep(DISCONNECT_CHECK_S)
        if await request.is_disconnected():
            sequence.cancel()
            return


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"
