"""`command` targets: deploy and rollback run user-given argument lists (never a shell string),
for Kubernetes, KServe, systemd or anything else. The gate probes health_url, then confirms the
NEW version answers (version_url / version_header, see engine.targets.gate.probe_version), then
runs the prompts when the target names an OpenAI-compatible url.

The target's secret (api_key_env / api_key_file) reaches the commands as the environment
variable MODELDECK_TARGET_API_KEY (never on their command line) and the probes as
`Authorization: Bearer`; command output that is shown is scrubbed of it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from engine.config import TargetSettings
from engine.errors import ActionFailed
from engine.registry.records import VersionInfo
from engine.targets import gate as gates
from engine.targets.base import GateReport, TargetHealth, needed

PLACEHOLDERS = ("model", "version", "path", "target")
SECRET_ENV = "MODELDECK_TARGET_API_KEY"


def render(template: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """Substitute {model} {version} {path} {target}; other braces are left as they are."""
    rendered = []
    for argument in template:
        for key in PLACEHOLDERS:
            argument = argument.replace("{" + key + "}", values[key])
        rendered.append(argument)
    return rendered


class CommandTarget:
    needs_files = True

    def __init__(self, settings: TargetSettings) -> None:
        self.settings = settings

    def check(self) -> TargetHealth:
        program = self.settings.deploy_command[0] if self.settings.deploy_command else None
        if program is None or shutil.which(program) is None:
            return TargetHealth(self.settings.name, "command", False,
                                f"deploy command {program!r} not found" if program else "no deploy_command")
        if not self.settings.health_url:
            return TargetHealth(self.settings.name, "command", True, f"{program} found")
        with self._http() as client:
            probe = gates.probe_health(client, self.settings.health_url, 0.0, min(self.settings.timeout_s, 5))
        detail = "healthy" if probe.ok else f"health_url: {probe.status_code or probe.detail}"
        return TargetHealth(self.settings.name, "command", True, detail, {"healthy": probe.ok})

    def validate(self, version: VersionInfo) -> None:
        """Any version can be handed to a command."""

    def apply(self, version: VersionInfo, files: Path | None, *, rollback: bool) -> None:
        files = needed(files)
        template = (self.settings.rollback_command if rollback and self.settings.rollback_command
                    else self.settings.deploy_command)
        if not template:
            raise ActionFailed(f"target {self.settings.name!r} has no deploy_command")
        self._run(render(template, {"model": version.model, "version": str(version.version),
                                    "path": str(files), "target": self.settings.name}))

    def _http(self) -> Any:
        import httpx

        secret = self.settings.resolve_secret()
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(headers=headers, verify=self.settings.verify_tls)

    def _run(self, arguments: list[str]) -> None:
        secret = self.settings.resolve_secret()
        env = {**os.environ, SECRET_ENV: secret} if secret else \
            {k: v for k, v in os.environ.items() if k != SECRET_ENV}
        try:
            completed = subprocess.run(arguments, capture_output=True, text=True, env=env,
                                       timeout=self.settings.timeout_s, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ActionFailed(f"target {self.settings.name!r}: command not found: {arguments[0]}") from None
        except subprocess.TimeoutExpired:
            raise ActionFailed(f"target {self.settings.name!r}: {arguments[0]} timed out after "
                               f"{self.settings.timeout_s:g}s") from None
        if completed.returncode != 0:
            last_line = _scrub((completed.stderr.strip().splitlines() or [""])[-1], secret)[:200]
            raise ActionFailed(f"target {self.settings.name!r}: {arguments[0]} exited "
                               f"{completed.returncode}: {last_line}")

    def gate(self, version: VersionInfo) -> GateReport:
        """health_url answers 200 -> the answer names the new version -> the prompts pass;
        each step runs only when the one before it passed."""
        settings, gate = self.settings, self.settings.gate
        with self._http() as client:
            health = (gates.probe_health(client, settings.health_url, gate.settle_s,
                                         settings.timeout_s) if settings.health_url else None)
            if health is not None and not health.ok:
                return gates.combine(health)
            served = (gates.probe_version(client, self._version_url(), version.model,
                                          version.version, settings.version_header,
                                          gate.settle_s, settings.timeout_s)
                      if settings.version_check else None)
            if served is not None and not served.ok:
                return gates.combine(health, served)
            prompts = (gates.probe_prompts(client, settings.url, version.model, gate,
                                           settings.timeout_s) if settings.url else None)
        return gates.combine(health, served, prompts)

    def _version_url(self) -> str:
        """Where the served version is read: version_url, else health_url, else /v1/models
        (config validation guarantees one of url and health_url)."""
        settings = self.settings
        return settings.version_url or settings.health_url or f"{(settings.url or '').rstrip('/')}/v1/models"

    def commit(self, version: VersionInfo, previous: VersionInfo | None) -> None:
        """Nothing to retire: the command already replaced what served."""

    def revert(self, version: VersionInfo, previous: VersionInfo, previous_files: Path | None) -> None:
        self.apply(previous, previous_files, rollback=True)


def _scrub(text: str, secret: str | None) -> str:
    """A command may echo its environment; what we show of its output never holds the secret."""
    return text.replace(secret, "***") if secret else text
