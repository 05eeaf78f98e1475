"""`command` targets: deploy and rollback run user-given argument lists (never a shell string),
for Kubernetes, KServe, systemd or anything else; the gate probes health_url (and prompts when
the target names an OpenAI-compatible url)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from engine.config import TargetSettings
from engine.errors import ActionFailed
from engine.registry.records import VersionInfo
from engine.targets import gate as gates
from engine.targets.base import GateReport, TargetHealth

PLACEHOLDERS = ("model", "version", "path", "target")


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
        import httpx

        with httpx.Client(verify=self.settings.verify_tls) as client:
            probe = gates.probe_health(client, self.settings.health_url, 0.0, min(self.settings.timeout_s, 5))
        detail = "healthy" if probe.ok else f"health_url: {probe.status_code or probe.detail}"
        return TargetHealth(self.settings.name, "command", True, detail, {"healthy": probe.ok})

    def validate(self, version: VersionInfo) -> None:
        """Any version can be handed to a command."""

    def apply(self, version: VersionInfo, files: Path, *, rollback: bool) -> None:
        template = (self.settings.rollback_command if rollback and self.settings.rollback_command
                    else self.settings.deploy_command)
        if not template:
            raise ActionFailed(f"target {self.settings.name!r} has no deploy_command")
        self._run(render(template, {"model": version.model, "version": str(version.version),
                                    "path": str(files), "target": self.settings.name}))

    def _run(self, arguments: list[str]) -> None:
        try:
            completed = subprocess.run(arguments, capture_output=True, text=True,
                                       timeout=self.settings.timeout_s, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ActionFailed(f"target {self.settings.name!r}: command not found: {arguments[0]}") from None
        except subprocess.TimeoutExpired:
            raise ActionFailed(f"target {self.settings.name!r}: {arguments[0]} timed out after "
                               f"{self.settings.timeout_s:g}s") from None
        if completed.returncode != 0:
            last_line = (completed.stderr.strip().splitlines() or [""])[-1][:200]
            raise ActionFailed(f"target {self.settings.name!r}: {arguments[0]} exited "
                               f"{completed.returncode}: {last_line}")

    def gate(self, version: VersionInfo) -> GateReport:
        import httpx

        gate = self.settings.gate
        with httpx.Client(verify=self.settings.verify_tls) as client:
            health = (gates.probe_health(client, self.settings.health_url, gate.settle_s,
                                         self.settings.timeout_s) if self.settings.health_url else None)
            prompts = (gates.probe_prompts(client, self.settings.url, version.model, gate,
                                           self.settings.timeout_s)
                       if self.settings.url and (health is None or health.ok) else None)
        return gates.combine(health, prompts)

    def commit(self, version: VersionInfo, previous: VersionInfo | None) -> None:
        """Nothing to retire: the command already replaced what served."""

    def revert(self, version: VersionInfo, previous: VersionInfo, previous_files: Path) -> None:
        self.apply(previous, previous_files, rollback=True)


