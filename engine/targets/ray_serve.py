"""`ray-serve` targets: serve a version on a Ray cluster with modeldeck's own engine.

Ray places the replicas and rolls them over; modeldeck drives it through Ray Serve's REST API on
the dashboard (no ray import here):
  GET /api/serve/applications/   every application's status, message and deployed config
  PUT /api/serve/applications/   the whole declarative config: applications left out are
                                 deleted, so the other applications' configs are sent back as
                                 Ray reported them and only ours changes
Deploy: the version's files on a path every node sees (the deck's materialized copy, or a copy
under shared_dir) -> PUT the application (engine.serving.ray_app:build with the version's ref and
path) -> wait until RUNNING (DEPLOY_FAILED / UNHEALTHY: fail with Ray's message) -> the gate
through the application's HTTP route. Ray keeps no revisions, so each configuration that reached
RUNNING is appended to the target's revision file in the deck home; a rollback, and the revert
after a failed gate, re-apply the one stored for the version returned to.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.config import TargetSettings
from engine.errors import ActionFailed, BadInput
from engine.fsutil import building_directory
from engine.paths import DeckPaths
from engine.ray_settings import RAY_DEPLOYMENT, RAY_IMPORT_PATH
from engine.registry.records import VersionInfo
from engine.targets.base import GateCheck, GateReport, TargetHealth, needed
from engine.targets.remote_deck import _json as json_object  # a JSON object, or {}

APPLICATIONS = "/api/serve/applications/"
POLL_S = 1.0
FAILED_STATES = ("DEPLOY_FAILED", "UNHEALTHY")
COMPLETE_MARK = ".modeldeck-complete"  # a shared_dir copy with this file is whole
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RayServeTarget:
    needs_files = True

    def __init__(self, settings: TargetSettings, paths: DeckPaths | None = None) -> None:
        if not settings.address:
            raise BadInput(f"target {settings.name!r} (ray-serve) needs address")
        self.settings, self.paths = settings, paths
        self.address = settings.address.rstrip("/")
        self.app = settings.app_name

    def _client(self) -> Any:
        import httpx

        token = self.settings.resolve_secret()  # a Ray auth token; sent, never shown
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(headers=headers, verify=self.settings.verify_tls,
                            timeout=self.settings.timeout_s)

    # ---- reading the cluster -------------------------------------------------------------

    def _call(self, client: Any, method: str, body: dict[str, Any] | None = None) -> Any:
        """GET or PUT Serve's applications; ActionFailed (one line, Ray's words) otherwise."""
        import httpx

        try:
            response = client.request(method, self.address + APPLICATIONS, json=body)
        except httpx.HTTPError as error:
            raise ActionFailed(f"target {self.settings.name!r}: {method} {APPLICATIONS} at "
                               f"{self.address}: {type(error).__name__}") from None
        if response.status_code != 200:
            refused = "Ray refused the application: " if method == "PUT" else ""
            raise ActionFailed(f"target {self.settings.name!r}: {refused}{method} {APPLICATIONS} "
                               f"answered {response.status_code}: {_one_line(response.text)}")
        return response

    def _details(self, client: Any) -> dict[str, Any]:
        return json_object(self._call(client, "GET"))

    def check(self) -> TargetHealth:
        try:
            with self._client() as client:
                details = self._details(client)
        except ActionFailed as error:
            return TargetHealth(self.settings.name, "ray-serve", False, str(error))
        state = app_state(details, self.app)
        return TargetHealth(self.settings.name, "ray-serve", True, state.pop("summary"), state)

    # ---- the driver interface ------------------------------------------------------------

    def validate(self, version: VersionInfo) -> None:
        if version.kind != "model":
            raise BadInput(f"{version.ref} is a {version.kind}; ray-serve targets serve full models")

    def apply(self, version: VersionInfo, files: Path | None, *, rollback: bool) -> None:
        path = self._reachable_files(version, needed(files))
        stored = self._stored(version, path) if rollback else None
        config = stored if stored is not None else self._app_config(version, path)
        with self._client() as client:
            self._put(client, config)
            self._wait_running(client, version)
        self._remember(version, config)

    def gate(self, version: VersionInfo) -> GateReport:
        """Through Serve's HTTP proxy, as clients reach the application: /health must name the
        version (Ray may still be draining the old replicas), then each prompt must answer from
        it within the latency bound."""
        import httpx

        from engine.targets import gate as gates

        base = self.settings.route_url
        try:
            with httpx.Client(verify=self.settings.verify_tls,
                              timeout=self.settings.timeout_s) as client:
                health = _probe_serving(client, base, version.ref, self.settings.gate.settle_s,
                                        self.settings.timeout_s)
                if not health.ok:
                    return GateReport(False, (health,))
                prompts = gates.probe_prompts(client, base, version.ref, self.settings.gate,
                                              self.settings.timeout_s, expect_version=version.ref)
        except httpx.HTTPError as error:
            return GateReport(False, (GateCheck(base, False, detail=type(error).__name__),))
        return gates.combine(health, prompts)

    def commit(self, version: VersionInfo, previous: VersionInfo | None) -> None:
        """Ray retired the previous replicas itself once the new ones ran."""

    def revert(self, version: VersionInfo, previous: VersionInfo, previous_files: Path | None) -> None:
        self.apply(previous, previous_files, rollback=True)

    # ---- applying ------------------------------------------------------------------------

    def _app_config(self, version: VersionInfo, files: Path) -> dict[str, Any]:
        settings = self.settings
        actor: dict[str, Any] = {"num_cpus": settings.num_cpus}
        if settings.num_gpus:
            actor["num_gpus"] = settings.num_gpus
        serve = {"gate": settings.gate.model_dump(mode="json")}  # no secret: Ray shows args
        config: dict[str, Any] = {
            "name": self.app, "route_prefix": settings.route_prefix,
            "import_path": RAY_IMPORT_PATH,
            "args": {"ref": version.ref, "files": str(files), "serve": serve},
            "deployments": [{"name": RAY_DEPLOYMENT, "num_replicas": settings.replicas,
                             "max_surge_percent": settings.surge_percent,
                             "max_ongoing_requests": 16, "ray_actor_options": actor}]}
        if settings.runtime_env:
            config["runtime_env"] = dict(settings.runtime_env)
        return config

    def _put(self, client: Any, app_config: dict[str, Any]) -> None:
        details = self._details(client)
        self._call(client, "PUT", deploy_body(details, app_config, self._http_options(details)))

    def _http_options(self, details: dict[str, Any]) -> dict[str, Any]:
        """Serve's running proxy keeps its options (Ray cannot change them live); a first
        start binds the proxy where `url` says: loopback stays loopback, else every interface."""
        if isinstance(details.get("http_options"), dict):
            return details["http_options"]
        parts = urlsplit(self.settings.serve_url)
        host = "127.0.0.1" if parts.hostname in LOOPBACK else "0.0.0.0"
        return {"host": host, "port": parts.port or (443 if parts.scheme == "https" else 80)}

    def _wait_running(self, client: Any, version: VersionInfo) -> None:
        deadline = time.monotonic() + self.settings.deploy_timeout_s
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = app_state(self._details(client), self.app)
            if state["serving"] == version.ref and state["status"] == "RUNNING":
                return
            if state["serving"] == version.ref and state["status"] in FAILED_STATES:
                raise ActionFailed(f"Ray Serve application {self.app!r} is {state['status']}: "
                                   f"{state['message']}")
            time.sleep(POLL_S)
        raise ActionFailed(f"Ray Serve application {self.app!r} did not reach RUNNING with "
                           f"{version.ref} within {self.settings.deploy_timeout_s:g}s (last: "
                           f"{state.get('status')}: {state.get('message') or 'no message'})")

    def _reachable_files(self, version: VersionInfo, files: Path) -> Path:
        """A path every replica can read: the deck's copy, or one under shared_dir."""
        if self.settings.shared_dir is None:
            return files.resolve()
        root = Path(self.settings.shared_dir).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        destination = root / f"{version.model}-v{version.version}"
        complete = lambda directory: (directory / COMPLETE_MARK).exists()  # noqa: E731
        if complete(destination):
            return destination
        with building_directory(destination, complete, prefix=".incoming-") as staging:
            for source in files.iterdir():
                shutil.copyfile(source, staging / source.name)
            (staging / COMPLETE_MARK).write_text(version.ref)
        return destination

    # ---- the revision history Ray does not keep -----------------------------------------

    def _revisions(self) -> Path | None:
        if self.paths is None:
            return None
        return self.paths.home / "targets" / self.settings.name / "ray-serve-revisions.jsonl"

    def _remember(self, version: VersionInfo, config: dict[str, Any]) -> None:
        path = self._revisions()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"ref": version.ref, "applied_at": time.time(), "config": config})
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def _stored(self, version: VersionInfo, files: Path) -> dict[str, Any] | None:
        """The last configuration that ran `version`, reading the files where they are now
        (the same content); None when none is stored or it names another application or route
        than deck.toml now does (then a new one is built from the settings)."""
        path = self._revisions()
        if path is None or not path.exists():
            return None
        found = None
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write
            if isinstance(entry, dict) and entry.get("ref") == version.ref:
                found = entry.get("config")
        if not isinstance(found, dict) or (found.get("name"), found.get("route_prefix")) != (
                self.app, self.settings.route_prefix):
            return None
        return {**found, "args": {**(found.get("args") or {}), "files": str(files)}}


def deploy_body(details: dict[str, Any], app_config: dict[str, Any],
                http_options: dict[str, Any]) -> dict[str, Any]:
    """The PUT body: the other applications as Ray runs them, ours replaced or added."""
    others = [app["deployed_app_config"] for name, app in (details.get("applications") or {}).items()
              if name != app_config["name"] and isinstance(app, dict)
              and isinstance(app.get("deployed_app_config"), dict)]
    body: dict[str, Any] = {"http_options": http_options, "applications": [*others, app_config]}
    if details.get("proxy_location"):
        body["proxy_location"] = details["proxy_location"]
    return body


def app_state(details: dict[str, Any], app: str) -> dict[str, Any]:
    """Our application's status, Ray's message, the version its config serves, the replicas by
    state, and a one-line summary; plus every application's status (the cluster's state)."""
    applications = details.get("applications") or {}
    others = {name: entry.get("status") for name, entry in applications.items()
              if isinstance(entry, dict)}
    entry = applications.get(app)
    if not isinstance(entry, dict):
        serve = "Serve running" if details.get("controller_info") else "Serve not started"
        return {"status": None, "message": "", "serving": None, "replicas": {},
                "applications": others, "summary": f"{serve}; application {app!r} not deployed"}
    config = entry.get("deployed_app_config") or {}
    serving = (config.get("args") or {}).get("ref")
    replicas: dict[str, int] = {}
    for deployment in (entry.get("deployments") or {}).values():
        for replica in deployment.get("replicas") or []:
            replicas[replica.get("state", "?")] = replicas.get(replica.get("state", "?"), 0) + 1
    message = ray_message(entry)
    counts = ", ".join(f"{count} {state}" for state, count in sorted(replicas.items())) or "none"
    summary = f"application {app!r} {entry.get('status')}, serving {serving}, replicas: {counts}"
    if message and entry.get("status") != "RUNNING":
        summary += f": {message}"
    return {"status": entry.get("status"), "message": message, "serving": serving,
            "replicas": replicas, "applications": others, "summary": summary}


def ray_message(entry: dict[str, Any]) -> str:
    """Ray's reason in one line: the application's message, and for each failed deployment its
    first sentence and the error its traceback ends with."""
    parts = [_one_line(entry.get("message") or "").rstrip(".")]
    for deployment in (entry.get("deployments") or {}).values():
        text = deployment.get("message") or ""
        if not text or deployment.get("status") in ("HEALTHY", "UPDATING"):
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        first = lines[0].split(". ")[0]
        parts.append(first.rstrip(".") if len(lines) == 1 else f"{first}; {lines[-1]}".rstrip("."))
    return "; ".join(part for part in parts if part)[:600]


def _probe_serving(client: Any, base: str, ref: str, settle_s: float, timeout_s: float) -> GateCheck:
    """Poll /health until it names ref (bounded): Ray routes new requests to the new replicas
    once RUNNING, but a keep-alive connection may still reach a draining one for a moment."""
    import httpx

    deadline = time.monotonic() + max(settle_s, 0.0) + timeout_s
    while True:
        started = time.monotonic()
        try:
            response = client.get(f"{base}/health")
            served = json_object(response).get("version")
            ok = response.status_code == 200 and served == ref
            check = GateCheck(f"{base}/health", ok, response.status_code,
                              time.monotonic() - started, "" if ok else f"serving {served}, expected {ref}")
        except httpx.HTTPError as error:
            check = GateCheck(f"{base}/health", False, None, None, type(error).__name__)
        if check.ok or time.monotonic() >= deadline:
            return check
        time.sleep(0.2)


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]
