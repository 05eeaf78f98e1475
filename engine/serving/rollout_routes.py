"""The rollout's control routes, guarded by the server's control token like /control/deploy:
start, status, pause, resume and abort (engine.serving.rollout runs the rollout itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.serving.host import ModelHost
from engine.serving.http import api_error_response, error_response, read_json_object
from engine.serving.requests import ApiError
from engine.serving.rollout import RolloutController, new_state, read_state
from engine.validate import MAX_INT64

CheckToken = Callable[[Request], Response | None]


def rollout_routes(host: ModelHost, check_token: CheckToken) -> list[Route]:
    routes = _RolloutRoutes(host, check_token)
    return [Route(f"/control/rollout/{verb}", getattr(routes, verb), methods=["POST"])
            for verb in ("start", "status", "pause", "resume", "abort")]


class _RolloutRoutes:
    def __init__(self, host: ModelHost, check_token: CheckToken) -> None:
        self.host, self.check_token = host, check_token
        self.controller: RolloutController | None = None
        self._starting = asyncio.Lock()

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        if (denied := self.check_token(request)) is not None:
            return denied
        try:
            return await read_json_object(request, self.host.settings, empty_is={})
        except ApiError as error:
            return api_error_response(error)

    async def start(self, request: Request) -> Response:
        from pydantic import ValidationError

        from engine.config import RolloutSettings

        body = await self._body(request)
        if isinstance(body, Response):
            return body
        model, version = body.get("model"), body.get("version")
        if (not isinstance(model, str) or not model or isinstance(version, bool)
                or not isinstance(version, int) or not 1 <= version <= MAX_INT64):
            return error_response(400, "expected {\"model\": a name, \"version\": a positive "
                                       "integer, \"settings\": {...}}", "invalid_request_error")
        try:
            settings = RolloutSettings.model_validate(body.get("settings") or {})
        except ValidationError as error:
            first = error.errors()[0]
            return error_response(400, f"rollout setting {'.'.join(map(str, first['loc']))}: "
                                       f"{first['msg']}", "invalid_request_error")
        async with self._starting:
            refusal = self._refusal(f"{model}@{version}")
            if refusal is not None:
                return refusal
            outcome = await asyncio.to_thread(self.host.add_candidate, model, version)
            if not outcome.passed:
                return JSONResponse({"started": False, "gate": outcome.to_dict()})
            live = self.host.active.ref if self.host.active else None
            evaluation = body.get("eval") if isinstance(body.get("eval"), dict) else None
            self.controller = RolloutController(self.host, new_state(model, version, live,
                                                                     settings, evaluation),
                                                settings)
            self.controller.start()
        return JSONResponse({"started": True, "gate": outcome.to_dict(),
                             "rollout": self.controller.snapshot()})

    def _refusal(self, candidate_ref: str) -> Response | None:
        if self.controller is not None and self.controller.active:
            return error_response(409, f"a rollout of {self.controller.state.candidate} is in "
                                       "progress; abort it first", "conflict")
        if self.host.active is None:
            return error_response(409, "nothing is served to roll out from; deploy a version "
                                       "first", "conflict")
        if self.host.active.ref == candidate_ref:
            return error_response(409, f"{candidate_ref} already serves", "conflict")
        return None

    async def status(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        if self.controller is not None:
            return JSONResponse({"rollout": self.controller.snapshot()})
        state = read_state(self.host.paths)  # the last one, from before this server started
        return JSONResponse({"rollout": state.to_dict() if state else None})

    async def pause(self, request: Request) -> Response:
        return await self._command(request, "pause")

    async def resume(self, request: Request) -> Response:
        return await self._command(request, "resume")

    async def abort(self, request: Request) -> Response:
        return await self._command(request, "abort")

    async def _command(self, request: Request, verb: str) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        controller = self.controller
        if controller is None or not controller.active:
            return error_response(409, "no rollout is in progress", "conflict")
        getattr(controller, verb)()
        if verb == "abort":  # answer once the weight is 0 and the state says so
            await asyncio.to_thread(controller.thread.join, 60.0)
        return JSONResponse({"rollout": controller.snapshot()})
