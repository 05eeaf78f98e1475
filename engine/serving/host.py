"""The versions a server holds: the one taking new requests, and during a deploy, the candidate
loaded beside it and the old one draining.

A swap is: load the candidate -> run the health gate on it -> make it active (new requests go
to it) -> close the old scheduler (its in-flight requests finish first) -> free the old model.
A failed load or gate leaves the active version untouched.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engine.config import GateSettings, ServeSettings
from engine.errors import DeckError
from engine.paths import DeckPaths
from engine.serving.loader import LoadedModel, load_for_serving
from engine.serving.metrics import ServerMetrics
from engine.serving.probes import judge_text
from engine.serving.scheduler import BatchScheduler, generate_blocking
from engine.serving.work import SamplingParams


@dataclass
class ServedVersion:
    loaded: LoadedModel
    scheduler: BatchScheduler

    @property
    def ref(self) -> str:
        return self.loaded.ref

    @property
    def engine(self) -> dict[str, Any]:
        """What computes this version: device, dtype, model step (fused / eager) and why."""
        import torch

        step = self.scheduler.step
        return {"device": self.loaded.device, "dtype": self.loaded.dtype,
                "engine_path": step.path, "engine_detail": step.reason,
                "torch_threads": torch.get_num_threads()}

    def retire(self) -> None:
        """Finish in-flight requests, then drop the model so its memory can be freed."""
        self.scheduler.close()
        self.scheduler.model = None
        self.loaded = LoadedModel(self.loaded.ref, None, self.loaded.tokenizer, self.loaded.device,
                                  self.loaded.dtype, self.loaded.context_length)
        gc.collect()
        _empty_cuda_cache()


@dataclass(frozen=True)
class GateOutcome:
    passed: bool
    reason: str
    checks: tuple[dict[str, Any], ...] = ()
    serving: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "checks": list(self.checks),
                "serving": self.serving}


@dataclass
class ModelHost:
    paths: DeckPaths
    settings: ServeSettings
    metrics: ServerMetrics
    active: ServedVersion | None = None
    _swap_lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self, model: str, version: int) -> ServedVersion:
        from engine.registry import Registry

        registry = Registry(self.paths)  # its own connection: this runs in a worker thread
        try:
            info = registry.resolve(f"{model}@{version}")
            files = registry.materialize(info)
        finally:
            registry.close()
        loaded = load_for_serving(self.paths, info.ref, files, self.settings.device,
                                  self.settings.dtype)
        if loaded.device == "cpu":
            _leave_a_core_for_http()
        scheduler = BatchScheduler(loaded.model, loaded.tokenizer,
                                   max_batch_size=self.settings.max_batch_size,
                                   max_queue=self.settings.max_queue,
                                   context_length=loaded.context_length,
                                   observer=self.metrics.observer(info.ref),
                                   release_unfused=True)
        return ServedVersion(loaded, scheduler)

    def start_with(self, served: ServedVersion) -> None:
        self.active = served
        self._announce(served)

    def swap_to(self, model: str, version: int) -> GateOutcome:
        """Load model@version beside the active one, gate it, and switch when it passes."""
        with self._swap_lock:
            try:
                candidate = self.load(model, version)
            except (DeckError, OSError, ValueError, RuntimeError) as error:
                return GateOutcome(False, f"load failed: {error}",
                                   ({"probe": "load", "ok": False, "detail": str(error)},),
                                   self.active.ref if self.active else None)
            outcome = run_gate(candidate, self.settings.gate)
            if not outcome.passed:
                candidate.retire()
                return GateOutcome(False, outcome.reason, outcome.checks,
                                   self.active.ref if self.active else None)
            previous, self.active = self.active, candidate
            self._announce(candidate)
        if previous is not None:
            threading.Thread(target=previous.retire, name="modeldeck-retire", daemon=True).start()
        return GateOutcome(True, "gate passed", outcome.checks, candidate.ref)

    def _announce(self, served: ServedVersion) -> None:
        """The active version's engine on /metrics and in run/engine.json (for `status`)."""
        import os

        from engine.runstate import write_engine_info

        engine = served.engine
        self.metrics.serving(served.ref, engine)
        try:
            write_engine_info(self.paths, os.getpid(), {"version": served.ref, **engine})
        except OSError:
            pass  # status then shows no engine line; serving is unaffected

    def close(self) -> None:
        if self.active is not None:
            self.active.retire()


def run_gate(candidate: ServedVersion, gate: GateSettings) -> GateOutcome:
    """Each fixed prompt must produce non-empty text, within the latency bound if one is set."""
    checks: list[dict[str, Any]] = []
    tokenizer = candidate.loaded.tokenizer
    for prompt in gate.prompts:
        started = time.monotonic()
        try:
            text, _ = generate_blocking(candidate.scheduler, tokenizer(prompt).input_ids,
                                        SamplingParams(max_tokens=gate.max_tokens, temperature=0))
        except (DeckError, RuntimeError) as error:
            checks.append({"probe": prompt, "ok": False, "detail": str(error)})
            break
        latency = time.monotonic() - started
        detail = judge_text(text, latency, gate.max_latency_s)
        checks.append({"probe": prompt, "ok": not detail, "latency_s": round(latency, 4),
                       "detail": detail})
        if detail:
            break
    failed = next((check for check in checks if not check["ok"]), None)
    if failed is None:
        return GateOutcome(True, "gate passed", tuple(checks))
    return GateOutcome(False, f"gate failed on {failed['probe']!r}: {failed['detail']}", tuple(checks))


def _leave_a_core_for_http() -> None:
    """One torch thread fewer than there are cores on a CPU server.

    The event loop (and often the clients) need a core for every streamed token. With torch on
    all cores, each wake-up preempts one OpenMP worker and the whole op waits at its barrier;
    measured on 2 cores with SmolLM2-135M, 1 torch thread decodes as fast as 2 in isolation, so
    the freed core is pure gain for the server (bench/serve.py).
    """
    import os

    import torch

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 1)))


def _empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
