"""Progressive rollouts inside the server: a candidate version takes a growing share of traffic
(or, first, a mirrored copy of it), and at each step its latency and error rate are compared
with the live version over the same window, from the server's own per-version histograms.

The controller is a thread of the server process, so a rollout outlives the CLI that started
it; its state is rewritten whole (engine.fsutil.write_atomically) to run/rollout.json at every
change. A failed gate or an abort sends the weight back to 0 and unloads the candidate; the
last step passed makes the candidate the deployed version in one registry transaction.
Gates read bucket counts, so a p95 is known to within its bucket (linear inside it).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from engine.config import RolloutSettings
from engine.fsutil import write_atomically
from engine.paths import DeckPaths

if TYPE_CHECKING:
    from engine.serving.host import ModelHost
    from engine.serving.metrics import ServerMetrics

TARGET = "local"
ANSWERED = ("stop", "length")
FAILED = ("error", "rejected")
ACTIVE_STATES = ("running", "paused")
TICK_S = 0.05


# ---- reading a window of the per-version histograms ------------------------------------------


@dataclass(frozen=True)
class VersionWindow:
    """Cumulative bucket counts (upper bound, count) and finished requests by outcome."""

    ttft: tuple[tuple[float, float], ...] = ()
    itl: tuple[tuple[float, float], ...] = ()
    outcomes: tuple[tuple[str, float], ...] = ()

    def minus(self, earlier: "VersionWindow") -> "VersionWindow":
        return VersionWindow(_bucket_delta(self.ttft, earlier.ttft),
                             _bucket_delta(self.itl, earlier.itl),
                             tuple((name, count - dict(earlier.outcomes).get(name, 0.0))
                                   for name, count in self.outcomes))

    @property
    def requests(self) -> int:
        counts = dict(self.outcomes)
        return int(sum(counts.get(name, 0.0) for name in (*ANSWERED, *FAILED)))

    @property
    def error_rate(self) -> float | None:
        counts = dict(self.outcomes)
        return sum(counts.get(name, 0.0) for name in FAILED) / self.requests if self.requests else None


def _bucket_delta(later: tuple[tuple[float, float], ...],
                  earlier: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    before = dict(earlier)
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in later)


def read_window(metrics: "ServerMetrics", version_ref: str) -> VersionWindow:
    """The version's series as they stand now (prometheus_client's public collect())."""
    buckets: dict[str, list[tuple[float, float]]] = {"ttft": [], "itl": []}
    names = {"modeldeck_time_to_first_token_seconds_bucket": "ttft",
             "modeldeck_inter_token_latency_seconds_bucket": "itl"}
    outcomes: list[tuple[str, float]] = []
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.labels.get("version") != version_ref:
                continue
            if sample.name in names:
                buckets[names[sample.name]].append((float(sample.labels["le"]), sample.value))
            elif sample.name == "modeldeck_requests_total":
                outcomes.append((sample.labels["outcome"], sample.value))
    return VersionWindow(tuple(sorted(buckets["ttft"])), tuple(sorted(buckets["itl"])),
                         tuple(outcomes))


def percentile(buckets: tuple[tuple[float, float], ...], share: float = 0.95) -> float | None:
    """The share-quantile from cumulative buckets, linear inside its bucket; None without data."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    wanted, lower, below = share * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= wanted:
            if bound == float("inf"):
                return lower  # past the last finite bucket: its bound is all that is known
            inside = count - below
            return lower + (bound - lower) * ((wanted - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def judge(candidate: VersionWindow, live: VersionWindow,
          settings: RolloutSettings) -> list[dict[str, Any]]:
    """Each gate: the two numbers, the limit and whether the candidate is within it. A gate
    with no samples on either side (no inter-token times at max_tokens=1) is skipped."""
    gates = []
    for name, ratio, pick in (("ttft_p95", settings.ttft_p95_ratio, lambda w: w.ttft),
                              ("itl_p95", settings.itl_p95_ratio, lambda w: w.itl)):
        ours, theirs = percentile(pick(candidate)), percentile(pick(live))
        if ours is None or theirs is None:
            gates.append({"gate": name, "ok": True, "skipped": "no samples"})
            continue
        floor = settings.latency_floor_s
        limit = ratio * max(theirs, floor)
        gates.append({"gate": name, "candidate": round(ours, 4), "live": round(theirs, 4),
                      "limit": round(limit, 4), "ok": max(ours, floor) <= limit})
    gates += _slo_gates(candidate, live, settings)
    ours_rate, theirs_rate = candidate.error_rate, live.error_rate or 0.0
    if ours_rate is None:
        gates.append({"gate": "error_rate", "ok": True, "skipped": "no samples"})
    else:
        limit = theirs_rate + settings.error_rate_margin
        gates.append({"gate": "error_rate", "candidate": round(ours_rate, 4),
                      "live": round(theirs_rate, 4), "limit": round(limit, 4),
                      "ok": ours_rate <= limit + 1e-12})
    return gates


def _slo_gates(candidate: VersionWindow, live: VersionWindow,
               settings: RolloutSettings) -> list[dict[str, Any]]:
    """With [slo] bounds: the candidate's share of requests within each bound (attainment,
    from the same buckets) may trail live's by at most slo_attainment_margin."""
    from engine.remote.derive import attainment
    from engine.remote.metrics import Histogram

    gates: list[dict[str, Any]] = []
    for name, bound, pick in (("ttft_slo", settings.slo_ttft_s, lambda w: w.ttft),
                              ("itl_slo", settings.slo_itl_s, lambda w: w.itl)):
        if bound is None:
            continue
        ours = attainment(bound, Histogram(pick(candidate)))
        theirs = attainment(bound, Histogram(pick(live)))
        if ours is None or theirs is None:
            gates.append({"gate": name, "ok": True, "skipped": "no samples"})
            continue
        limit = max(0.0, theirs - settings.slo_attainment_margin)
        gates.append({"gate": name, "candidate": round(ours, 4), "live": round(theirs, 4),
                      "limit": round(limit, 4), "ok": ours >= limit - 1e-12})
    return gates


def describe_failure(gate: dict[str, Any]) -> str:
    if gate["gate"].endswith("_slo"):
        return (f"{gate['gate']} gate failed: {gate['candidate']:.1%} of the candidate's requests "
                f"met the SLO < limit {gate['limit']:.1%} (live {gate['live']:.1%})")
    unit = "" if gate["gate"] == "error_rate" else " s"
    return (f"{gate['gate']} gate failed: candidate {gate['candidate']}{unit} > limit "
            f"{gate['limit']}{unit} (live {gate['live']}{unit})")


# ---- the state on disk --------------------------------------------------------------------------


@dataclass
class RolloutState:
    id: str
    model: str
    version: int
    live: str | None
    settings: dict[str, Any]
    status: str = "running"  # running | paused | promoted | failed | aborted | interrupted
    step: int = -1  # index into steps; -1 the shadow phase (or not started)
    weight: float = 0.0
    shadow: float = 0.0
    message: str = "starting"
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    steps: list[dict[str, Any]] = field(default_factory=list)  # one record per judged step
    failed_gate: dict[str, Any] | None = None
    shadow_stats: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] | None = None
    history_id: int | None = None

    @property
    def candidate(self) -> str:
        return f"{self.model}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "candidate": self.candidate}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RolloutState":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def read_state(paths: DeckPaths) -> RolloutState | None:
    try:
        return RolloutState.from_dict(json.loads(paths.rollout_state.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_state(paths: DeckPaths, state: RolloutState) -> None:
    state.updated_at = time.time()
    paths.run.mkdir(parents=True, exist_ok=True)
    write_atomically(paths.rollout_state, json.dumps(state.to_dict(), indent=1))


def settle_interrupted(paths: DeckPaths) -> RolloutState | None:
    """At server start: a rollout the file says was running died with its server. The live
    version serves (the pointer never moved); the state, history and audit say interrupted."""
    from engine.registry import Registry

    state = read_state(paths)
    if state is None or state.status not in ACTIVE_STATES:
        return None
    registry = Registry(paths)
    try:
        deployment = registry.deployment(TARGET)
        promoted = next((entry for entry in registry.audit(limit=50, verb="rollout")
                         if entry.arguments.get("rollout_id") == state.id
                         and entry.result == "ok"), None)
        if promoted is not None and deployment is not None and deployment.ref == state.candidate:
            state.status, state.message = "promoted", "promoted (recorded before the server stopped)"
        else:
            state.status, state.weight = "interrupted", 0.0
            state.message = "interrupted: the server stopped mid-rollout; the live version serves"
            entry = _record(registry, state, "interrupted", state.message, move=False)
            state.history_id = entry.id
    finally:
        registry.close()
    write_state(paths, state)
    return state


def _record(registry: Any, state: RolloutState, outcome: str, reason: str, move: bool) -> Any:
    chosen = registry.resolve(state.candidate)
    arguments = {"ref": state.candidate, "target": TARGET, "rollout_id": state.id,
                 "live": state.live}
    detail = json.dumps({"steps": state.steps, "failed_gate": state.failed_gate,
                         "shadow": state.shadow_stats, "eval": state.eval})
    return registry.record_rollout(TARGET, chosen, outcome=outcome, reason=reason,
                                   arguments=arguments, detail=detail, move=move)


# ---- the controller -----------------------------------------------------------------------------


class RolloutController:
    """Runs one rollout in a thread of the server: shadow phase, weighted steps, verdict."""

    def __init__(self, host: "ModelHost", state: RolloutState, settings: RolloutSettings) -> None:
        self.host, self.state, self.settings = host, state, settings
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._paused = threading.Event()
        self._abort = threading.Event()
        self._live_baseline: VersionWindow | None = None
        self.thread = threading.Thread(target=self._run, name="modeldeck-rollout", daemon=True)

    @property
    def active(self) -> bool:
        return self.state.status in ACTIVE_STATES

    def start(self) -> None:
        self._save()
        self.thread.start()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self.state.shadow_stats = self.host.shadow_summary()
            return self.state.to_dict()

    def pause(self) -> None:
        if self.active:
            self._paused.set()
            self._update(status="paused", message=f"paused at {self.state.weight:.0%}")

    def resume(self) -> None:
        if self.active:
            self._paused.clear()
            self._update(status="running", message="resumed")

    def abort(self) -> None:
        self._abort.set()

    # ---- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.settings.shadow > 0:
                self.host.shadow = self.settings.shadow
                passed = self._run_step(-1, 0.0)
                self.host.shadow = 0.0
                if not passed:
                    return
            for index, weight in enumerate(self.settings.steps):
                if not self._run_step(index, weight):
                    return
            self._promote()
        except Exception as error:  # a bug or a disk fault: reverse, and say why in the state
            self._reverse("failed", f"rollout stopped: {type(error).__name__}: {error}")

    def _run_step(self, index: int, weight: float) -> bool:
        """Hold the step, then judge it; False when the rollout ended (failed or aborted)."""
        self._update(step=index, weight=weight)
        self.host.set_weight(weight)
        live_ref = self.host.active.ref if self.host.active else ""
        start_candidate = read_window(self.host.metrics, self.state.candidate)
        start_live = read_window(self.host.metrics, live_ref)
        held, last = 0.0, time.monotonic()
        label = "shadow" if index < 0 else f"{weight:.0%}"
        while True:
            if self._abort.wait(TICK_S):
                self._reverse("aborted", "aborted by request")
                return False
            now = time.monotonic()
            held += 0.0 if self._paused.is_set() else now - last
            last = now
            if self._paused.is_set():
                continue
            candidate = read_window(self.host.metrics, self.state.candidate).minus(start_candidate)
            live = read_window(self.host.metrics, live_ref).minus(start_live)
            if held < self.settings.hold_s:
                self._update(message=f"step {label}: holding {held:.0f}s of "
                                     f"{self.settings.hold_s:.0f}s, {candidate.requests} requests")
            elif candidate.requests < self.settings.min_requests:
                self._update(message=f"step {label}: waiting for traffic: {candidate.requests} "
                                     f"of {self.settings.min_requests} requests")
            else:
                return self._conclude(label, weight, candidate, live, held)

    def _conclude(self, label: str, weight: float, candidate: VersionWindow, live: VersionWindow,
                  held: float) -> bool:
        if live.requests > 0:
            self._live_baseline = live
        baseline = live if live.requests > 0 or self._live_baseline is None else self._live_baseline
        gates = judge(candidate, baseline, self.settings)
        failed = next((gate for gate in gates if not gate["ok"]), None)
        record = {"step": label, "weight": weight, "held_s": round(held, 2),
                  "candidate_requests": candidate.requests, "live_requests": live.requests,
                  "gates": gates, "outcome": "failed" if failed else "passed"}
        with self._lock:
            self.state.steps.append(record)
            self.state.failed_gate = failed
        if failed is not None:
            self._reverse("failed", describe_failure(failed))
            return False
        return True

    def _reverse(self, status: str, reason: str) -> None:
        """Weight back to 0, candidate unloaded, then history and audit say why."""
        self.host.drop_candidate()
        self._update(status=status, weight=0.0, message=reason)
        self._finish(status, reason, move=False)

    def _promote(self) -> None:
        reason = f"rollout passed {len(self.state.steps)} steps"
        self._finish("ok", reason, move=True)  # the pointer first: a crash now serves it at restart
        self.host.promote_candidate()
        self._update(status="promoted", weight=1.0, message=f"{self.state.candidate} deployed")

    def _finish(self, outcome: str, reason: str, move: bool) -> None:
        from engine.registry import Registry
        from engine.runstate import run_lock

        registry = Registry(self.host.paths)  # its own connection: this is the rollout thread
        try:
            with run_lock(self.host.paths, f"{TARGET}.lock", wait_s=30.0):
                self.snapshot()
                entry = _record(registry, self.state, outcome, reason, move)
            self._update(history_id=entry.id)
        finally:
            registry.close()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self.state, name, value)
        self._save()

    def _save(self) -> None:
        # one writer at a time, each writing the state as of its turn: a request's pause and
        # the thread's tick must not leave the file saying "running" after the pause
        with self._save_lock:
            write_state(self.host.paths, RolloutState.from_dict(self.snapshot()))


def new_state(model: str, version: int, live: str | None, settings: RolloutSettings,
              evaluation: dict[str, Any] | None) -> RolloutState:
    return RolloutState(uuid.uuid4().hex[:12], model, version, live,
                        settings.model_dump(mode="json"), shadow=settings.shadow, eval=evaluation)
