"""A contract fake of vLLM's runtime LoRA API, enforcing the documented request shapes.

vLLM itself is too heavy for CI here (no CPU wheel that fits the suite's time), so this fake
checks exactly what vLLM checks that matters to a client: the body fields and their types, that
lora_path is a readable adapter directory, that a name is not loaded twice, and that only loaded
names can be unloaded or used as `model` in a completion.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

BASE_MODEL = "base-model"


def _error(message: str, code: int = 400) -> JSONResponse:
    return JSONResponse({"object": "error", "message": message, "type": "BadRequestError",
                         "code": code}, status_code=code)


class FakeVllm:
    def __init__(self, api_key: str | None = None, broken_adapters: tuple[str, ...] = ()) -> None:
        self.loaded: dict[str, str] = {}
        self.requests: list[tuple[str, dict]] = []
        self.api_key = api_key
        self.broken_adapters = broken_adapters  # names whose completions come back empty
        self.app = Starlette(routes=[
            Route("/v1/load_lora_adapter", self.load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", self.unload, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/completions", self.complete, methods=["POST"]),
        ])

    async def _body(self, request: Request, required: dict[str, type]) -> dict | JSONResponse:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error("Unauthorized", 401)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error("invalid JSON")
        self.requests.append((request.url.path, body))
        for field, kind in required.items():
            if not isinstance(body.get(field), kind):
                return _error(f"field {field!r} is required and must be {kind.__name__}")
        return body

    async def load(self, request: Request):
        body = await self._body(request, {"lora_name": str, "lora_path": str})
        if isinstance(body, JSONResponse):
            return body
        if body["lora_name"] in self.loaded:
            return _error(f"The lora adapter '{body['lora_name']}' has already been loaded.")
        if not (Path(body["lora_path"]) / "adapter_config.json").exists():
            return _error(f"No adapter found at {body['lora_path']}", 404)
        self.loaded[body["lora_name"]] = body["lora_path"]
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def unload(self, request: Request):
        body = await self._body(request, {"lora_name": str})
        if isinstance(body, JSONResponse):
            return body
        if self.loaded.pop(body["lora_name"], None) is None:
            return _error(f"The lora adapter '{body['lora_name']}' cannot be found.", 404)
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' removed successfully.")

    async def models(self, request: Request):
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error("Unauthorized", 401)
        ids = [BASE_MODEL, *self.loaded]
        return JSONResponse({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

    async def complete(self, request: Request):
        body = await self._body(request, {"model": str, "prompt": str})
        if isinstance(body, JSONResponse):
            return body
        if body["model"] != BASE_MODEL and body["model"] not in self.loaded:
            return _error(f"The model `{body['model']}` does not exist.", 404)
        text = "" if body["model"] in self.broken_adapters else " hello from the adapter"
        return JSONResponse({"object": "text_completion", "model": body["model"],
                             "choices": [{"index": 0, "text": text, "finish_reason": "length"}]})


class ServerThread:
    """Run an ASGI app with uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
