"""deck.toml's fields for `[[targets]] kind = "ray-serve"` (engine.targets.ray_serve).

A mixin of engine.config's TargetSettings: the keys sit in the target's own table, as the other
kinds' do, and are checked when deck.toml is read (exit 2, one line naming the key).

  address         the Ray dashboard, where Serve's REST API answers (http://head:8265)
  app             the Serve application's name (default: the target's name)
  url             where Serve's HTTP proxy answers clients (default: address's host, port 8000);
                  the gate and the clients reach the application at url + route_prefix
  route_prefix    the application's route on the proxy ("/" unless set)
  replicas        replicas of the deployment; num_cpus / num_gpus: Ray resources per replica
  surge_percent   extra replicas Ray starts before it stops old ones during a change (100: a
                  full new set first, so no request waits on a cold replica); 0 on a cluster
                  with no room for both (one GPU): old replicas stop first, and requests queue
                  at Ray's proxy while the new ones load
  shared_dir      a directory every Ray node sees (NFS, ...): the version's files are copied
                  there; unset, replicas read the deck's own copy (right for one node, or a
                  deck home on a shared filesystem)
  runtime_env     passed to Ray as the application's runtime_env (env_vars, pip, ...)
  deploy_timeout_s  the longest a change may take to reach RUNNING
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from engine.validate import NAME_PATTERN

DEFAULT_SERVE_PORT = 8000  # Ray Serve's HTTP proxy port when none is configured
# What the target applies and the application defines (engine.serving.ray_app): one place, so
# the target (which must not import ray) and the app agree.
RAY_IMPORT_PATH = "engine.serving.ray_app:build"
RAY_DEPLOYMENT = "ModeldeckReplica"


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")) or not urlsplit(value).hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value.rstrip("/")


class RayServeFields(BaseModel):
    address: str | None = None
    app: str | None = None
    route_prefix: str = "/"
    replicas: int = Field(default=1, ge=1, le=1000)
    num_cpus: float = Field(default=1.0, ge=0, le=1024)
    num_gpus: float = Field(default=0.0, ge=0, le=64)
    surge_percent: int = Field(default=100, ge=0, le=100)
    shared_dir: Path | None = None
    runtime_env: dict[str, Any] = {}
    deploy_timeout_s: float = Field(default=600.0, gt=0, le=24 * 3600)

    @field_validator("address")
    @classmethod
    def _address_url(cls, address: str | None) -> str | None:
        return _http_url(address)

    @field_validator("app")
    @classmethod
    def _app_name(cls, app: str | None) -> str | None:
        if app is not None and not NAME_PATTERN.match(app):
            raise ValueError("use letters, digits, '.', '_' or '-' (max 64)")
        return app

    @field_validator("route_prefix")
    @classmethod
    def _route(cls, prefix: str) -> str:
        if not prefix.startswith("/") or any(c.isspace() or c in "?#" for c in prefix):
            raise ValueError("must start with '/' and hold no spaces, '?' or '#'")
        return prefix.rstrip("/") or "/"

    @model_validator(mode="after")
    def _ray_serve_needs_address(self) -> "RayServeFields":
        kind, name = getattr(self, "kind", None), getattr(self, "name", "?")
        if kind == "ray-serve" and not self.address:
            raise ValueError(f"target {name!r} (ray-serve) needs address (the Ray dashboard, "
                             "e.g. http://127.0.0.1:8265)")
        if kind == "ray-serve":
            _http_url(getattr(self, "url", None))
        return self

    @property
    def app_name(self) -> str:
        return self.app or str(getattr(self, "name"))

    @property
    def serve_url(self) -> str:
        """Where Serve's HTTP proxy answers: url, else the dashboard's host on port 8000."""
        configured = getattr(self, "url", None)
        if configured:
            return str(configured).rstrip("/")
        parts = urlsplit(self.address or "http://127.0.0.1")
        host = parts.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"{parts.scheme}://{host}:{DEFAULT_SERVE_PORT}"

    @property
    def route_url(self) -> str:
        """The application's base URL, as its clients and the gate reach it."""
        prefix = "" if self.route_prefix == "/" else self.route_prefix
        return self.serve_url + prefix
