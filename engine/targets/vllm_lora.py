"""`vllm-lora` targets: hot-load a LoRA adapter version into a running vLLM server.

Follows vLLM's documented runtime-LoRA API (server started with --enable-lora and
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True):
  POST /v1/load_lora_adapter   {"lora_name": NAME, "lora_path": PATH}
  POST /v1/unload_lora_adapter {"lora_name": NAME}
vLLM reads lora_path from its own filesystem, so the adapter is first copied into the target's
lora_dir, a directory both sides see. The adapter is then served as model NAME.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from engine.config import TargetSettings
from engine.errors import ActionFailed, BadInput
from engine.fsutil import building_directory
from engine.registry.records import VersionInfo
from engine.targets import gate as gates
from engine.targets.base import GateReport, TargetHealth, needed


def adapter_name(version: VersionInfo) -> str:
    return f"{version.model}-v{version.version}"


class VllmLoraTarget:
    needs_files = True

    def __init__(self, settings: TargetSettings) -> None:
        if not settings.url or not settings.lora_dir:
            raise BadInput(f"target {settings.name!r} (vllm-lora) needs url and lora_dir")
        self.settings = settings
        self.url = settings.url.rstrip("/")

    def _client(self) -> Any:
        import httpx

        secret = self.settings.resolve_secret()
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(headers=headers, verify=self.settings.verify_tls,
                            timeout=self.settings.timeout_s)

    def check(self) -> TargetHealth:
        import httpx

        try:
            with self._client() as client:
                response = client.get(f"{self.url}/v1/models")
        except httpx.HTTPError as error:
            return TargetHealth(self.settings.name, "vllm-lora", False, type(error).__name__)
        if response.status_code != 200:
            return TargetHealth(self.settings.name, "vllm-lora", False, f"HTTP {response.status_code}")
        served = [entry.get("id") for entry in response.json().get("data", [])]
        return TargetHealth(self.settings.name, "vllm-lora", True, "up", {"models": served})

    def validate(self, version: VersionInfo) -> None:
        if version.kind != "adapter":
            raise BadInput(f"{version.ref} is not a LoRA adapter; vllm-lora targets serve adapters "
                           "(fine-tune with --keep-adapter)")

    def apply(self, version: VersionInfo, files: Path | None, *, rollback: bool) -> None:
        files = needed(files)
        lora_path = self._materialize(version, files)
        self._post("/v1/load_lora_adapter", {"lora_name": adapter_name(version),
                                              "lora_path": str(lora_path)})

    def _materialize(self, version: VersionInfo, files: Path) -> Path:
        """Copy the adapter into the shared lora_dir (atomically: temp dir, then rename)."""
        if self.settings.lora_dir is None:
            raise BadInput(f"target {self.settings.name!r}: lora_dir is required for vllm-lora")
        root = Path(self.settings.lora_dir).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        destination = root / adapter_name(version)
        complete = lambda directory: (directory / "adapter_config.json").exists()  # noqa: E731
        if complete(destination):
            return destination
        with building_directory(destination, complete, prefix=".incoming-") as staging:
            for source in files.iterdir():
                shutil.copyfile(source, staging / source.name)
        return destination

    def _post(self, path: str, body: dict[str, Any]) -> None:
        import httpx

        try:
            with self._client() as client:
                response = client.post(f"{self.url}{path}", json=body)
        except httpx.HTTPError as error:
            raise ActionFailed(f"target {self.settings.name!r}: {path}: {type(error).__name__}") from None
        if response.status_code != 200:
            raise ActionFailed(f"target {self.settings.name!r}: {path} answered "
                               f"{response.status_code}: {response.text[:200]}")

    def gate(self, version: VersionInfo) -> GateReport:
        with self._client() as client:
            return gates.combine(gates.probe_prompts(client, self.url, adapter_name(version),
                                                     self.settings.gate, self.settings.timeout_s))

    def commit(self, version: VersionInfo, previous: VersionInfo | None) -> None:
        if previous is not None and previous.kind == "adapter" and previous != version:
            self._post("/v1/unload_lora_adapter", {"lora_name": adapter_name(previous)})

    def revert(self, version: VersionInfo, previous: VersionInfo, previous_files: Path | None) -> None:
        # The previous adapter was never unloaded (commit runs only after a passed gate), so
        # reverting means dropping the new one.
        self._post("/v1/unload_lora_adapter", {"lora_name": adapter_name(version)})
