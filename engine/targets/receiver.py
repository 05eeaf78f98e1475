"""The receiving side of `modeldeck` targets: routes a modeldeck server mounts under /control/
so another deck can push a version to it and deploy it there.

  POST /control/blobs/missing   {"sha256": [...]}      -> {"missing": [...], "partial": {sha: bytes}}
  PUT  /control/blobs/{sha256}  body from X-Upload-Offset, X-Total-Size  -> stored | offset
  POST /control/versions        {"model", "files": [...], "metadata": {...}} -> {"ref"}
  POST /control/registry/deploy {"ref", "reason"}       -> the deploy result (its own gate)
  POST /control/registry/rollback {"to", "reason"}

Uploads are resumable: bytes land in blobs/tmp/upload-<sha>.partial and a retry continues from
its size. A blob enters the store only once its hash matches, and a version is registered only
when every one of its blobs is present and verified, so a half-sent version is never deployable.
All routes need the server's control token (the caller passes a check function).
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.deck import Deck
from engine.errors import DeckError
from engine.registry.blobs import file_sha256

SHA256 = re.compile(r"^[0-9a-f]{64}$")
TokenCheck = Callable[[Any], Any]  # request -> None when allowed, else an error response


def partial_path(deck: Deck, sha256: str) -> Path:
    return deck.paths.blob_tmp / f"upload-{sha256}.partial"


def missing_blobs(deck: Deck, wanted: list[str]) -> dict[str, Any]:
    missing = [sha for sha in wanted if not deck.registry.blobs.has(sha)]
    partial = {sha: partial_path(deck, sha).stat().st_size for sha in missing
               if partial_path(deck, sha).exists()}
    return {"missing": missing, "partial": partial}


def finish_upload(deck: Deck, sha256: str) -> bool:
    """Verify a complete upload and move it into the store; a mismatch discards it."""
    partial = partial_path(deck, sha256)
    if file_sha256(partial) != sha256:
        partial.unlink()
        return False
    final = deck.registry.blobs.path_of(sha256)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(partial, 0o444)
    os.replace(partial, final)
    return True


def register_pushed(deck: Deck, body: dict[str, Any]) -> dict[str, Any]:
    """Register a pushed version once all its blobs are here and verified (idempotent)."""
    from engine.errors import BadInput
    from engine.registry.inspect import SourceDescription

    model, files, metadata = body["model"], body["files"], body["metadata"]
    origin = metadata.get("lineage", {}).get("pushed_from")
    for existing in deck.registry.versions(model):
        if origin and existing.lineage.get("pushed_from") == origin:
            return {"ref": existing.ref, "created": False}
    for entry in files:
        if not deck.registry.blobs.verify(entry["sha256"]):
            raise BadInput(f"blob {entry['sha256'][:12]} for {entry['name']} is missing or corrupt")
    description = SourceDescription(
        tuple((entry["name"], deck.registry.blobs.path_of(entry["sha256"])) for entry in files),
        metadata["weight_format"], metadata["kind"], metadata.get("architecture"),
        metadata.get("param_count"), metadata.get("lineage", {}).get("base_model"))
    version = deck.registry.register(
        model, description, produced_by=metadata.get("produced_by", "push"), source=origin,
        metrics=metadata.get("metrics"), lineage=metadata.get("lineage"),
        status=metadata.get("status", "ready"), audit_verb="receive",
        audit_arguments={"model": model, "from": origin})
    return {"ref": version.ref, "created": True}


def transfer_routes(deck: Deck, check_token: TokenCheck) -> list:
    """Starlette routes for the receiving side; the serving app mounts them."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def guarded(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Any]]:
        async def endpoint(request: Request) -> Any:
            if (denied := check_token(request)) is not None:
                return denied
            try:
                return await handler(request)
            except DeckError as error:
                return JSONResponse({"error": {"message": str(error), "kind": error.kind}},
                                    status_code=400 if error.exit_code == 2 else 409)
            except (KeyError, TypeError, ValueError) as error:
                return JSONResponse({"error": {"message": f"malformed request: {error}",
                                               "kind": "bad-input"}}, status_code=400)
        return endpoint

    async def missing(request: Request) -> Any:
        wanted = [sha for sha in (await request.json())["sha256"] if SHA256.match(sha)]
        return JSONResponse(await run_in_threadpool(_in_own_deck, deck, missing_blobs, wanted))

    async def upload(request: Request) -> Any:
        return await _receive_blob(deck, request, run_in_threadpool)

    async def versions(request: Request) -> Any:
        return JSONResponse(await run_in_threadpool(_in_own_deck, deck, register_pushed,
                                                    await request.json()))

    async def deploy(request: Request) -> Any:
        body = await request.json()
        return JSONResponse(await run_in_threadpool(_in_own_deck, deck, _deploy_here, body))

    async def rollback(request: Request) -> Any:
        body = await request.json()
        return JSONResponse(await run_in_threadpool(_in_own_deck, deck, _rollback_here, body))

    return [Route("/control/blobs/missing", guarded(missing), methods=["POST"]),
            Route("/control/blobs/{sha256}", guarded(upload), methods=["PUT"]),
            Route("/control/versions", guarded(versions), methods=["POST"]),
            Route("/control/registry/deploy", guarded(deploy), methods=["POST"]),
            Route("/control/registry/rollback", guarded(rollback), methods=["POST"])]


async def _receive_blob(deck: Deck, request: Any, run_in_threadpool: Callable) -> Any:
    from starlette.responses import JSONResponse

    sha256 = request.path_params["sha256"]
    if not SHA256.match(sha256):
        return JSONResponse({"error": {"message": "not a sha256", "kind": "bad-input"}}, status_code=400)
    if deck.registry.blobs.has(sha256):
        return JSONResponse({"stored": True, "offset": None})
    offset, total = int(request.headers["x-upload-offset"]), int(request.headers["x-total-size"])
    partial = partial_path(deck, sha256)
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if offset != have:  # the sender must continue from what we hold
        return JSONResponse({"stored": False, "offset": have}, status_code=409)
    with partial.open("ab") as sink:
        async for chunk in request.stream():
            sink.write(chunk)
            if sink.tell() > total:
                break
    size = partial.stat().st_size
    if size < total:
        return JSONResponse({"stored": False, "offset": size}, status_code=409)
    stored = size == total and await run_in_threadpool(finish_upload, deck, sha256)
    if not stored:
        partial.unlink(missing_ok=True)
        return JSONResponse({"error": {"message": "hash mismatch", "kind": "bad-input"}}, status_code=422)
    return JSONResponse({"stored": True, "offset": None})


def _in_own_deck(deck: Deck, function: Callable[..., Any], *args: Any) -> Any:
    """Run in a worker thread with a registry connection of its own (SQLite connections are
    bound to the thread that opened them)."""
    own = Deck(deck.paths, deck.config_file)
    try:
        return function(own, *args)
    finally:
        own.close()


def _deploy_here(deck: Deck, body: dict[str, Any]) -> dict[str, Any]:
    from engine import actions

    request = actions.DeployRequest(body["ref"], "local", body.get("reason"), bool(body.get("force")))
    return actions.deploy(deck, request).to_dict()


def _rollback_here(deck: Deck, body: dict[str, Any]) -> dict[str, Any]:
    from engine import actions

    request = actions.RollbackRequest("local", body.get("to"), body.get("reason"))
    return actions.rollback(deck, request).to_dict()
