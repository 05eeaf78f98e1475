"""A Ray Serve application that serves one registry version with modeldeck's own engine.

Ray places the replicas, restarts them and rolls them over; each replica is a ModelHost with the
version loaded (engine.serving.host) behind the same OpenAI-compatible API as `modeldeck serve`
(engine.serving.app: /v1/completions, /v1/chat/completions with streaming, /v1/models, /health,
/metrics), every answer naming its version in X-Modeldeck-Version.

The `ray-serve` target (engine.targets.ray_serve) applies it through Ray Serve's REST API as
  import_path: engine.serving.ray_app:build
  args: {"ref": "tiny@2", "files": "/path/every/node/sees", "serve": {...[serve] settings...}}
so modeldeck must be importable on every node (installed there, or shipped with the app's
runtime_env). Only this module imports ray; `import engine` never loads it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import serve

from engine.config import ServeSettings
from engine.paths import DeckPaths
from engine.ray_settings import RAY_DEPLOYMENT
from engine.serving.app import build_app
from engine.serving.host import ModelHost, run_gate
from engine.serving.metrics import ServerMetrics


@serve.deployment(name=RAY_DEPLOYMENT)  # the name the target's `deployments` entry overrides
@serve.ingress()
class ModeldeckReplica:
    """One replica: load the version, pass its gate, then answer. A replica that cannot load
    its files or fails its gate raises, and Ray reports the application DEPLOY_FAILED with this
    message (while, during a surge rollover, the previous version's replicas keep serving)."""

    def __init__(self, ref: str, files: str, serve_settings: dict[str, Any]) -> None:
        settings = ServeSettings.model_validate(serve_settings)
        source = Path(files)
        if not source.exists():
            raise FileNotFoundError(f"{ref}: its files are not at {files} on this node (every "
                                    "node must see the path; see the ray-serve target's docs)")
        # Its own scratch home: a replica must not write into the deck home it was deployed
        # from (run/engine.json there describes the local server).
        self.paths = DeckPaths(Path(tempfile.mkdtemp(prefix="modeldeck-ray-")))
        self.host = ModelHost(self.paths, settings, ServerMetrics())
        served = self.host.load_files(ref, source)
        outcome = run_gate(served, settings.gate)
        if not outcome.passed:
            served.retire()
            raise RuntimeError(f"{ref}: {outcome.reason}")
        self.host.start_with(served)

    def __serve_build_asgi_app__(self) -> Any:
        # No control token: a replica is never swapped or stopped from outside; Ray rolls it.
        return build_app(self.host, control_token=lambda: None, api_key=None,
                         on_stop=lambda: None)

    def check_health(self) -> None:
        """Ray's periodic probe: a replica whose batching thread died is restarted."""
        active = self.host.active
        thread = getattr(active.scheduler, "_thread", None) if active else None
        if thread is None or not thread.is_alive():
            raise RuntimeError("the replica's scheduler is not running")

    def __del__(self) -> None:
        host = getattr(self, "host", None)
        if host is not None:
            host.close()


def build(args: dict[str, Any]) -> Any:
    """The application builder Ray calls with the config's `args`."""
    missing = [key for key in ("ref", "files") if not isinstance(args.get(key), str)]
    if missing:
        raise ValueError(f"modeldeck's Ray Serve app needs args {', '.join(missing)}")
    deployment: Any = ModeldeckReplica  # a Ray Deployment once decorated (mypy skips ray)
    return deployment.bind(args["ref"], args["files"], dict(args.get("serve") or {}))
