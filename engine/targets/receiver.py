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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.config import ServeSettings
from engine.deck import Deck
from engine.errors import BadInput, DeckError, brief
from engine.registry.blobs import file_sha256
from engine.validate import MAX_INT64, SHA256_PATTERN, parse_int, safe_relative_name

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


def transfer_routes(deck: Deck, check_token: TokenCheck,
                    settings: ServeSettings | None = None) -> list:
    """Starlette routes for the receiving side; the serving app mounts them. settings: the
    server's [serve] limits on bodies (default: this deck's)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from engine.serving.http import (BodyTimeout, api_error_response, error_response,
                                     read_json_object, timeout_response)
    from engine.serving.requests import ApiError

    limits = settings or deck.config.serve

    def guarded(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Any]]:
        async def endpoint(request: Request) -> Any:
            if (denied := check_token(request)) is not None:
                return denied
            try:
                return await handler(request)
            except ApiError as error:
                return api_error_response(error)
            except BodyTimeout:
                return timeout_response()
            except DeckError as error:
                bad = error.exit_code == 2
                return error_response(400 if bad else 409, str(error),
                                      "invalid_request_error" if bad else "conflict", error.kind)
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
                # Shapes are checked below; this is the net for what slipped past them.
                return error_response(400, f"malformed request: {brief(error)}",
                                      "invalid_request_error", "bad-input")
        return endpoint

    async def body_of(request: Request) -> dict[str, Any]:
        return await read_json_object(request, limits)

    async def missing(request: Request) -> Any:
        wanted = _sha_list(await body_of(request))
        return JSONResponse(await run_in_threadpool(_in_own_deck, deck, missing_blobs, wanted))

    async def upload(request: Request) -> Any:
        return await _receive_blob(deck, request, run_in_threadpool)

    async def versions(request: Request) -> Any:
        body = _pushed_version(await body_of(request))
        return JSONResponse(await run_in_threadpool(_in_own_deck, deck, register_pushed, body))

    async def deploy(request: Request) -> Any:
        body = _fields(await body_of(request), required={"ref": str},
                       optional={"reason": str, "force": bool})
        return JSONResponse(await run_in_threadpool(_in_own_deck, deck, _deploy_here, body))

    async def rollback(request: Request) -> Any:
        body = _fields(await body_of(request), required={}, optional={"to": str, "reason": str})
        return JSONResponse(await run_in_threadpool(_in_own_deck, deck, _rollback_here, body))

    return [Route("/control/blobs/missing", guarded(missing), methods=["POST"]),
            Route("/control/blobs/{sha256}", guarded(upload), methods=["PUT"]),
            Route("/control/versions", guarded(versions), methods=["POST"]),
            Route("/control/registry/deploy", guarded(deploy), methods=["POST"]),
            Route("/control/registry/rollback", guarded(rollback), methods=["POST"])]


# ---- the shapes of the bodies, checked before anything is looked up or written ----------------

MAX_LISTED_BLOBS = 100_000


def _sha_list(body: dict[str, Any]) -> list[str]:
    wanted = body.get("sha256")
    if (not isinstance(wanted, list) or len(wanted) > MAX_LISTED_BLOBS
            or not all(isinstance(sha, str) for sha in wanted)):
        raise BadInput(f"sha256 must be a list of up to {MAX_LISTED_BLOBS} hex digests")
    return [sha for sha in wanted if SHA256_PATTERN.match(sha)]


def _pushed_version(body: dict[str, Any]) -> dict[str, Any]:
    """{"model": name, "files": [{"name", "sha256"}, ...] (at least one), "metadata": {...}};
    each file name must stay inside the version's directory."""
    model, files, metadata = body.get("model"), body.get("files"), body.get("metadata")
    if not isinstance(model, str) or not model:
        raise BadInput("model must be a non-empty name")
    if not isinstance(files, list) or not files:
        raise BadInput("files must be a non-empty list of {name, sha256}")
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not SHA256_PATTERN.match(entry["sha256"]) or not isinstance(entry.get("name"), str):
            raise BadInput("each file must be {\"name\": a file name, \"sha256\": a hex digest}")
        safe_relative_name("pushed file name", entry["name"])
    if not isinstance(metadata, dict):
        raise BadInput("metadata must be an object")
    _fields(metadata, required={"weight_format": str, "kind": str},
            optional={"architecture": str, "param_count": int, "produced_by": str,
                      "status": str, "metrics": dict, "lineage": dict})
    lineage = metadata.get("lineage") or {}
    _fields(lineage, required={}, optional={"pushed_from": str, "base_model": str})
    count = metadata.get("param_count")
    if count is not None and not 0 <= count <= MAX_INT64:
        raise BadInput("metadata.param_count is out of range")
    return body


def _fields(body: dict[str, Any], required: dict[str, type],
            optional: dict[str, type]) -> dict[str, Any]:
    """Each named field of the expected JSON type (bool is not an int); others pass through."""
    for name, kind in [*required.items(), *optional.items()]:
        value = body.get(name)
        if value is None and name not in required:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) \
                or (kind is str and name in required and not value):
            raise BadInput(f"{name} must be {_TYPE_NAMES[kind]}")
    return body


_TYPE_NAMES = {str: "a non-empty string", bool: "true or false", int: "an integer",
               dict: "an object"}


async def _receive_blob(deck: Deck, request: Any, run_in_threadpool: Callable) -> Any:
    from starlette.responses import JSONResponse

    from engine.serving.http import error_response

    sha256 = request.path_params["sha256"]
    if not SHA256_PATTERN.match(sha256):
        return error_response(400, "not a sha256 hex digest", "invalid_request_error", "bad-input")
    if deck.registry.blobs.has(sha256):
        return JSONResponse({"stored": True, "offset": None})
    offset = parse_int("X-Upload-Offset", _header(request, "x-upload-offset"), 0)
    total = parse_int("X-Total-Size", _header(request, "x-total-size"), 0)
    partial = partial_path(deck, sha256)
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if offset != have:  # the sender must continue from what we hold
        return JSONResponse({"stored": False, "offset": have}, status_code=409)
    with partial.open("ab") as sink:
        async for chunk in request.stream():
            # Disk writes block: a slow disk must not stall every other connection.
            await run_in_threadpool(sink.write, chunk)
            if sink.tell() > total:
                break
    size = partial.stat().st_size
    if size < total:
        return JSONResponse({"stored": False, "offset": size}, status_code=409)
    stored = size == total and await run_in_threadpool(finish_upload, deck, sha256)
    if not stored:
        partial.unlink(missing_ok=True)
        return error_response(422, "hash mismatch", "invalid_request_error", "bad-input")
    return JSONResponse({"stored": True, "offset": None})


def _header(request: Any, name: str) -> str:
    value = request.headers.get(name)
    if value is None:
        raise BadInput(f"the {name} header is missing")
    return value


def _in_own_deck(deck: Deck, function: Callable[..., Any], *args: Any) -> Any:
    """Run in a worker thread with a registry connection of its own (SQLite connections are
    bound to the thread that opened them)."""
    own = Deck(deck.paths, deck.config_file)
    try:
        return function(own, *args)
    finally:
        own.close()


def _deploy_here(deck: Deck, body: dict[str, Any]) -> dict[str, Any]:
    """Deploy a pushed version to this deck's `local`, gated, through the same plan and flow as
    `modeldeck deploy` (this runs inside the server, so the server is running: a pending
    deployment is gated again rather than left pending)."""
    from engine.targets import plans

    force = bool(body.get("force"))
    plan = plans.plan_deploy(deck, body["ref"], "local", force)
    arguments = {"ref": plan.chosen.ref, "target": "local", "force": force}
    return _moved(deck, plan, body.get("reason"), arguments,
                  plan.changes_anything or plan.pending)


def _rollback_here(deck: Deck, body: dict[str, Any]) -> dict[str, Any]:
    from engine.targets import plans

    plan = plans.plan_rollback(deck, "local", body.get("to"))
    arguments = {"target": "local", "to": plan.chosen.ref}
    return _moved(deck, plan, body.get("reason"), arguments, plan.changes_anything)


def _moved(deck: Deck, plan: Any, reason: str | None, arguments: dict[str, Any],
           needed: bool) -> dict[str, Any]:
    from engine.targets import plans

    history = plans.move(deck, plan, reason, arguments) if needed else None
    return {**plan.to_dict(), "changed": history is not None,
            "history": history.to_dict() if history else None}
