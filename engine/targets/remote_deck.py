"""`modeldeck` targets: push a version to another modeldeck server and deploy it there.

Only the content-addressed files the remote deck lacks are sent, resumably (an interrupted
upload continues from the bytes the remote already holds); the remote registers the version once
every blob is verified, then switches with its own health gate. Authenticated with the remote
server's control token (from the target's api_key_env or api_key_file); TLS when the URL is https.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from engine.config import TargetSettings
from engine.errors import ActionFailed, BadInput
from engine.paths import DeckPaths
from engine.registry.records import FileEntry, VersionInfo
from engine.targets.base import GateCheck, GateReport, TargetHealth, needed
from engine.testhooks import pause_point

TOKEN_HEADER = "X-Modeldeck-Token"
CHUNK_BYTES = 256 << 10
UPLOAD_ATTEMPTS = 3


def deck_identity(paths: DeckPaths) -> str:
    """A stable id for this deck, so a remote recognises versions it already received."""
    path = paths.home / "deck.id"
    if not path.exists():
        path.write_text(uuid.uuid4().hex)
    return path.read_text().strip()


class RemoteDeckTarget:
    needs_files = True

    def __init__(self, settings: TargetSettings, paths: DeckPaths | None = None) -> None:
        if not settings.url:
            raise BadInput(f"target {settings.name!r} (modeldeck) needs a url")
        self.settings, self.url = settings, settings.url.rstrip("/")
        self.paths = paths
        self.remote_refs: dict[str, str] = {}

    def _client(self) -> Any:
        import httpx

        token = self.settings.resolve_secret()
        headers = {TOKEN_HEADER: token} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, verify=self.settings.verify_tls,
                            timeout=self.settings.timeout_s)

    def validate(self, version: VersionInfo) -> None:
        if version.kind != "model":
            raise BadInput(f"{version.ref} is a {version.kind}; modeldeck servers serve full models")

    def check(self) -> TargetHealth:
        import httpx

        try:
            with self._client() as client:
                response = client.get("/health")
        except httpx.HTTPError as error:
            return TargetHealth(self.settings.name, "modeldeck", False, type(error).__name__)
        served = _json(response).get("version")
        return TargetHealth(self.settings.name, "modeldeck", response.status_code in (200, 503),
                            f"HTTP {response.status_code}, serving {served or 'nothing'}",
                            {"serving": served})

    def apply(self, version: VersionInfo, files: Path | None, *, rollback: bool) -> None:
        files = needed(files)
        with self._client() as client:
            self._push_blobs(client, version.files, files)
            remote_ref = self._register(client, version)
            self.remote_refs[version.ref] = remote_ref
            self._call(client, "/control/registry/deploy", {"ref": remote_ref,
                                                            "reason": f"pushed {version.ref}"})

    def push(self, version: VersionInfo, files: Path) -> str:
        """Send the blobs the remote lacks and register the version there (what apply() does
        before it deploys): the version's ref on the remote deck."""
        with self._client() as client:
            self._push_blobs(client, version.files, files)
            return self._register(client, version)

    def ref_on_remote(self, version: VersionInfo) -> str:
        """The remote's ref for a version this deck pushed before (registering is idempotent
        per origin, and nothing is uploaded): ActionFailed when the remote does not hold it."""
        try:
            with self._client() as client:
                return self._register(client, version)
        except ActionFailed:
            raise ActionFailed(f"target {self.settings.name!r} does not hold {version.ref}, which "
                               "this deck last deployed there; deploy to it again first") from None

    def rollout(self, verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /control/rollout/{verb} on the remote server (start, status, pause, resume,
        abort): the same routes, token and answer as the local server's."""
        with self._client() as client:
            return self._call(client, f"/control/rollout/{verb}", body or {})

    def _push_blobs(self, client: Any, entries: tuple[FileEntry, ...], files: Path) -> None:
        status = self._call(client, "/control/blobs/missing", {"sha256": [e.sha256 for e in entries]})
        missing, partial = set(status["missing"]), status.get("partial", {})
        for entry in entries:
            if entry.sha256 in missing:
                self._upload(client, entry, files / entry.name, int(partial.get(entry.sha256, 0)))

    def _upload(self, client: Any, entry: FileEntry, path: Path, offset: int) -> None:
        import httpx

        for _ in range(UPLOAD_ATTEMPTS):
            headers = {"X-Upload-Offset": str(offset), "X-Total-Size": str(entry.size_bytes),
                       "Content-Type": "application/octet-stream"}
            try:
                response = client.put(f"/control/blobs/{entry.sha256}", headers=headers,
                                      content=_chunks(path, offset))
            except httpx.HTTPError as error:
                raise ActionFailed(f"target {self.settings.name!r}: upload of {entry.name} "
                                   f"interrupted ({type(error).__name__}); deploy again to resume") from None
            body = _json(response)
            if response.status_code == 200 and body.get("stored"):
                return
            if response.status_code != 409:
                raise ActionFailed(f"target {self.settings.name!r}: upload of {entry.name} refused: "
                                   f"{_message(response)}")
            offset = int(body["offset"])  # the remote holds more (or less): continue from there
        raise ActionFailed(f"target {self.settings.name!r}: upload of {entry.name} did not complete")

    def _register(self, client: Any, version: VersionInfo) -> str:
        origin = f"{deck_identity(self.paths)}:{version.ref}" if self.paths else version.ref
        metadata = {"kind": version.kind, "weight_format": version.weight_format,
                    "architecture": version.architecture, "param_count": version.param_count,
                    "produced_by": version.produced_by, "metrics": version.metrics,
                    "status": version.status,
                    "lineage": {**version.lineage, "pushed_from": origin,
                                "origin_parent": version.parent_version}}
        files = [{"name": e.name, "sha256": e.sha256, "size_bytes": e.size_bytes} for e in version.files]
        return self._call(client, "/control/versions", {"model": version.model, "files": files,
                                                         "metadata": metadata})["ref"]

    def _call(self, client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            response = client.post(path, json=body)
        except httpx.HTTPError as error:
            raise ActionFailed(f"target {self.settings.name!r}: {path}: {type(error).__name__}") from None
        if response.status_code != 200:
            raise ActionFailed(f"target {self.settings.name!r}: {_message(response)}")
        return _json(response)

    def gate(self, version: VersionInfo) -> GateReport:
        """The remote ran its own gate ([serve.gate] there) before switching. Then this
        target's [targets.gate] runs against the remote's /v1, as its clients reach it:
        /health must name the pushed version, then each prompt must answer non-empty, from that
        version, within the latency bound. A failure makes the flow revert the remote."""
        import httpx

        from engine.targets import gate as gates

        expected = self.remote_refs.get(version.ref)
        try:
            with self._client() as client:
                response = client.get("/health")
                served = _json(response).get("version")
                ok = response.status_code == 200 and served == expected
                health = GateCheck("/health", ok, response.status_code, None,
                                   "" if ok else f"serving {served}, expected {expected}")
                if not ok:
                    return GateReport(False, (health,))
                prompts = gates.probe_prompts(client, self.url, expected or version.ref,
                                              self.settings.gate, self.settings.timeout_s,
                                              expect_version=expected)
        except httpx.HTTPError as error:
            return GateReport(False, (GateCheck("/health", False, detail=type(error).__name__),))
        return gates.combine(health, prompts)

    def commit(self, version: VersionInfo, previous: VersionInfo | None) -> None:
        """The remote server retires its previous version itself."""

    def revert(self, version: VersionInfo, previous: VersionInfo, previous_files: Path | None) -> None:
        self.apply(previous, previous_files, rollback=True)


def _chunks(path: Path, offset: int):
    with path.open("rb") as handle:
        handle.seek(offset)
        sent_any = False
        while chunk := handle.read(CHUNK_BYTES):
            if sent_any:
                pause_point("push:mid-blob")  # test hook: a kill here leaves a half-sent blob
            yield chunk
            sent_any = True


def _json(response: Any) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _message(response: Any) -> str:
    body = _json(response)
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return f"HTTP {response.status_code}: {message or response.text[:200]}"
