"""The versions a server holds: the one taking new requests, and during a deploy, the candidate
loaded beside it and the old one draining.

A swap is: load the candidate -> run the health gate on it -> make it active (new requests go
to it) -> close the old scheduler (its in-flight requests finish first) -> free the old model.
A failed load or gate leaves the active version untouched.

During a rollout (engine.serving.rollout) a gated candidate stays loaded beside the active
version: pick() sends a request to it with probability `weight` (sticky on a session id), and
shadow_copy() says whether a live request should also be mirrored to it.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import GateSettings, ServeSettings
from engine.errors import DeckError
from engine.paths import DeckPaths
from engine.serving.arrivals import Arrivals
from engine.serving.loader import LoadedModel, load_for_serving
from engine.serving.metrics import ServerMetrics
from engine.serving.probes import judge_text
from engine.serving.kvcache import ForwardPart, SlotKVCache
from engine.serving.modelstep import ModelStep
from engine.serving.scheduler import BatchScheduler, generate_blocking
from engine.serving.work import SamplingParams


GOLDEN = (5 ** 0.5 - 1) / 2  # its multiples mod 1 spread evenly over [0, 1)


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
        settle_heap()  # the dropped model's cycles are collected, then the rest frozen again
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
    candidate: ServedVersion | None = None
    weight: float = 0.0  # share of new requests the candidate takes (0..1)
    shadow: float = 0.0  # share of live requests also run on the candidate, answer dropped
    _swap_lock: threading.Lock = field(default_factory=threading.Lock)
    _shadow_lock: threading.Lock = field(default_factory=threading.Lock)
    _shadow: dict[str, float] = field(default_factory=dict)
    _draws: Iterator[int] = field(default_factory=itertools.count)
    # Requests being read, whichever version they go to (engine.serving.arrivals).
    arrivals: Arrivals = field(default_factory=Arrivals)

    # ---- routing during a rollout --------------------------------------------------------

    def pick(self, session_id: str | None = None) -> ServedVersion | None:
        """The version a new request goes to: the candidate for a share `weight` of requests;
        with a session id, the same side every time for a given weight (its hash decides).
        Without one, the draws are a golden-ratio sequence rather than random: any run of N
        requests is split to within a few requests of N * weight, so even a 5% step sees its
        share of traffic in a short window."""
        candidate, weight = self.candidate, self.weight
        if candidate is None or weight <= 0:
            return self.active
        draw = session_draw(session_id) if session_id else next(self._draws) * GOLDEN % 1.0
        return candidate if draw < weight else self.active

    def shadow_copy(self, served: ServedVersion) -> ServedVersion | None:
        """The candidate, when this live request should also run on it."""
        candidate = self.candidate
        if candidate is None or served is candidate or self.shadow <= 0:
            return None
        return candidate if random.random() < self.shadow else None

    def record_shadow(self, latency_s: float, overlap: float | None) -> None:
        candidate = self.candidate
        ref = candidate.ref if candidate else "unknown"
        agreement = "unknown" if overlap is None else "exact" if overlap == 1.0 else "differs"
        self.metrics.shadow_requests.labels(ref, agreement).inc()
        self.metrics.shadow_latency.labels(ref).observe(latency_s)
        if overlap is not None:
            self.metrics.shadow_overlap.labels(ref).observe(overlap)
        with self._shadow_lock:
            stats = self._shadow
            stats["requests"] = stats.get("requests", 0) + 1
            stats["latency_sum_s"] = stats.get("latency_sum_s", 0.0) + latency_s
            if overlap is not None:
                stats["compared"] = stats.get("compared", 0) + 1
                stats["exact"] = stats.get("exact", 0) + (overlap == 1.0)
                stats["overlap_sum"] = stats.get("overlap_sum", 0.0) + overlap

    def shadow_summary(self) -> dict[str, Any]:
        with self._shadow_lock:
            stats = dict(self._shadow)
        requests, compared = int(stats.get("requests", 0)), int(stats.get("compared", 0))
        return {"requests": requests, "compared": compared,
                "mean_latency_s": round(stats["latency_sum_s"] / requests, 4) if requests else None,
                "exact_match": round(stats["exact"] / compared, 4) if compared else None,
                "token_overlap": round(stats["overlap_sum"] / compared, 4) if compared else None}

    def add_candidate(self, model: str, version: int) -> GateOutcome:
        """Load model@version beside the active one and gate it; it takes no traffic yet."""
        with self._swap_lock:
            candidate, outcome = self._load_gated(model, version, serving=None)
            if candidate is None:
                return outcome
            self.weight, self.shadow, self._shadow = 0.0, 0.0, {}
            self.candidate = candidate
            self._publish_weights()
        return GateOutcome(True, "gate passed", outcome.checks, candidate.ref)

    def drop_candidate(self) -> None:
        """Weight back to 0 first (no new request goes there), then unload: requests already
        on the candidate finish before its scheduler closes."""
        with self._swap_lock:
            self.weight, self.shadow = 0.0, 0.0
            candidate, self.candidate = self.candidate, None
            self._publish_weights(dropped=candidate)
        if candidate is not None:
            candidate.retire()

    def promote_candidate(self) -> None:
        with self._swap_lock:
            candidate = self.candidate
            if candidate is None:
                return
            previous, self.active, self.candidate = self.active, candidate, None
            self.weight, self.shadow = 0.0, 0.0
            self._announce(candidate)
            self._publish_weights(dropped=previous)
        if previous is not None:
            threading.Thread(target=previous.retire, name="modeldeck-retire", daemon=True).start()

    def _publish_weights(self, dropped: ServedVersion | None = None) -> None:
        if dropped is not None:
            self.metrics.traffic_weight.labels(dropped.ref).set(0.0)
        if self.candidate is not None:
            self.metrics.traffic_weight.labels(self.candidate.ref).set(self.weight)
        if self.active is not None:
            share = 1.0 - self.weight if self.candidate is not None else 1.0
            self.metrics.traffic_weight.labels(self.active.ref).set(share)

    def set_weight(self, weight: float) -> None:
        self.weight = weight
        self._publish_weights()

    # ---- loading and swapping ------------------------------------------------------------

    def load(self, model: str, version: int) -> ServedVersion:
        from engine.registry import Registry

        registry = Registry(self.paths)  # its own connection: this runs in a worker thread
        try:
            info = registry.resolve(f"{model}@{version}")
            files = registry.materialize(info)
        finally:
            registry.close()
        return self.load_files(info.ref, files)

    def load_files(self, ref: str, files: Path) -> ServedVersion:
        """Load a version from its materialized files (a Ray Serve replica has no registry:
        engine.serving.ray_app passes the path every node sees)."""
        loaded = load_for_serving(self.paths, ref, files, self.settings.device,
                                  self.settings.dtype)
        if loaded.device == "cpu":
            _leave_a_core_for_http()
        self.metrics.max_num_seqs.set(self.settings.max_batch_size)
        scheduler = BatchScheduler(loaded.model, loaded.tokenizer,
                                   max_batch_size=self.settings.max_batch_size,
                                   max_queue=self.settings.max_queue,
                                   context_length=loaded.context_length,
                                   observer=self.metrics.observer(ref),
                                   release_unfused=True, arrivals=self.arrivals)
        self.metrics.watch_gemm_threads(ref, getattr(scheduler.step, "threads", None))
        _slow_down_for_tests(scheduler, ref)
        served = ServedVersion(loaded, scheduler)
        settle_heap()
        return served

    def start_with(self, served: ServedVersion) -> None:
        self.active = served
        self._announce(served)

    def swap_to(self, model: str, version: int) -> GateOutcome:
        """Load model@version beside the active one, gate it, and switch when it passes."""
        with self._swap_lock:
            candidate, outcome = self._load_gated(model, version,
                                                  self.active.ref if self.active else None)
            if candidate is None:
                return outcome
            previous, self.active = self.active, candidate
            self._announce(candidate)
        if previous is not None:
            threading.Thread(target=previous.retire, name="modeldeck-retire", daemon=True).start()
        return GateOutcome(True, "gate passed", outcome.checks, candidate.ref)

    def _load_gated(self, model: str, version: int,
                    serving: str | None) -> tuple[ServedVersion | None, GateOutcome]:
        """Load model@version and run the health gate on it: (it, the gate's outcome), or
        (None, why not) after a failed load or gate (the candidate is freed). `serving`: the
        version a failed outcome says still serves. The caller holds the swap lock."""
        try:
            candidate = self.load(model, version)
        except (DeckError, OSError, ValueError, RuntimeError) as error:
            return None, GateOutcome(False, f"load failed: {error}",
                                     ({"probe": "load", "ok": False, "detail": str(error)},),
                                     serving)
        outcome = run_gate(candidate, self.settings.gate)
        if not outcome.passed:
            candidate.retire()
            return None, GateOutcome(False, outcome.reason, outcome.checks, serving)
        return candidate, outcome

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
        if self.candidate is not None:
            self.candidate.retire()
        if self.active is not None:
            self.active.retire()


def session_draw(session_id: str) -> float:
    """A number in [0, 1) fixed by the session id: the same session, the same side."""
    digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class _SlowStep:
    """A model step that sleeps first: the rollout tests' slow candidate."""

    def __init__(self, step: ModelStep, delay: float) -> None:
        self.step, self.delay = step, delay
        self.path: str = step.path
        self.reason: str = step.reason

    def run(self, parts: list[ForwardPart], cache: SlotKVCache) -> list[Any]:
        time.sleep(self.delay)
        return self.step.run(parts, cache)


def _slow_down_for_tests(scheduler: BatchScheduler, version_ref: str) -> None:
    """The rollout tests' slow candidate (engine.testhooks; inert unless its variable is set)."""
    from engine.testhooks import slow_version_delay

    delay = slow_version_delay(version_ref)
    if delay > 0:
        scheduler.step = _SlowStep(scheduler.step, delay)


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
    all cores for every op, each wake-up preempts one OpenMP worker and the op waits at its
    barrier, and the step's many small ops each pay a parallel region: on 2 cores with
    SmolLM2-135M the whole step on 2 threads was slower than on 1. The fused step's GEMMs, big
    enough to be worth it, still run on every core (engine.serving.modelstep.gemm_threads).
    """
    import os

    import torch

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 1)))


def settle_heap() -> None:
    """Collect once, then freeze what survives (models, tokenizers, the app: ~400,000 objects
    with SmolLM2 loaded) out of the garbage collector's reach. Measured: a full collection of
    that heap takes ~190 ms, and serving's own allocations trigger one from time to time, a
    190 ms stall of every stream each time; frozen, it takes microseconds. vLLM does the same
    after start-up (`freeze_gc_heap`). Unfreezing first lets a retired model's reference
    cycles be collected rather than kept forever."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
