"""What the panes render: small immutable view models, built by the sources in sources.py.

Panes never call the engine; they are given these objects, so they can be tested with fixed
data and the engine modules (telemetry, jobs) can be plugged in behind the sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.training.series import RunClock

SPARK_BLOCKS = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    name: str
    memory_bytes: int | None = None


@dataclass(frozen=True)
class GpuRow:
    index: int
    name: str
    utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None = None
    power_w: float | None = None
    utilization_history: tuple[float, ...] = ()
    processes: tuple[ProcessRow, ...] = ()
    diagnosis: str = ""  # engine.telemetry.diagnosis' line for this GPU


@dataclass(frozen=True)
class HostView:
    cpu_pct: float
    cpu_count: int
    memory_used_bytes: int
    memory_total_bytes: int
    cpu_history: tuple[float, ...] = ()


@dataclass(frozen=True)
class GpuPanel:
    """status: 'ok', or why there are no GPU rows ('no-nvml', 'no-gpu', 'error')."""

    status: str
    reason: str = ""
    gpus: tuple[GpuRow, ...] = ()
    host: HostView | None = None


LOCAL_ENDPOINT = "local"  # the embedded server's row in the Throughput pane


@dataclass(frozen=True)
class VersionRow:
    """One version an endpoint serves, over the pane's window (rollouts and deploys serve two)."""

    ref: str
    tokens_per_s: float | None = None
    ttft_p95_s: float | None = None
    requests: float | None = None  # finished in the window
    failed: float | None = None  # of which failed (error or rejected)
    slo: Any = None  # engine SloStats over the window; None with no [slo] in deck.toml


@dataclass(frozen=True)
class RolloutView:
    """The local server's rollout as run/rollout.json last said (engine.actions.rollout_state)."""

    candidate: str
    live: str
    status: str  # running | paused | promoted | failed | aborted | interrupted
    step: int  # index into the steps; -1 the shadow phase
    steps: tuple[float, ...]  # candidate weights, 0..1
    weight: float
    shadow: float
    message: str

    @property
    def active(self) -> bool:
        return self.status in ("running", "paused")


@dataclass(frozen=True)
class EndpointRow:
    name: str
    kind: str
    # up | degraded | down | stale; for the local server also stopped (not running) and starting
    # (its start lock is held while the model loads, or it has not answered /health yet)
    status: str
    reason: str = ""
    tokens_per_s: float | None = None
    requests_per_s: float | None = None
    ttft_p95_s: float | None = None
    running: int | None = None
    waiting: int | None = None
    kv_cache_pct: float | None = None
    tokens_history: tuple[float, ...] = ()
    url: str = ""
    # (measure, p50, p95, p99) in seconds: time to first token, inter-token, end to end
    latency: tuple[tuple[str, float | None, float | None, float | None], ...] = ()
    checked_at: float | None = None
    versions: tuple[VersionRow, ...] = ()  # per version, when the server labels its series
    slo: Any = None  # engine SloStats over the window; None with no [slo] in deck.toml
    discovered: bool = False  # found running on this box, not named in deck.toml
    diagnosis: str = ""  # engine.telemetry.diagnosis' line for this endpoint


@dataclass(frozen=True)
class EndpointsPanel:
    status: str = "ok"  # ok | not-available
    reason: str = ""
    endpoints: tuple[EndpointRow, ...] = ()
    warnings: tuple[str, ...] = ()  # about the local server (reachable without an API key)
    window_s: float | None = None  # rates and TTFT are over this many seconds (the sampler's)
    interval_s: float | None = None  # one history point per poll, this far apart
    rollout: RolloutView | None = None  # the local server's rollout, while one is in progress


def history_columns(history: tuple[float, ...], window_s: float | None,
                    interval_s: float | None) -> tuple[float, ...]:
    """One sparkline column per rate window (every window_s / interval_s-th point, the newest
    kept): each point already averages its window, so a 15-column sparkline covers minutes."""
    step = round(window_s / interval_s) if window_s and interval_s else 1
    return history[::-1][::max(1, step)][::-1]


def local_server_running(panel: EndpointsPanel | None) -> bool:
    """Whether the last Throughput read saw the local server up (no file access needed)."""
    rows = panel.endpoints if panel is not None else ()
    return any(row.name == LOCAL_ENDPOINT and row.status != "stopped" for row in rows)


@dataclass(frozen=True)
class ModelRow:
    ref: str
    model: str
    version: int
    size_bytes: int
    parent: str | None
    status: str
    metrics: tuple[tuple[str, str], ...] = ()
    aliases: tuple[str, ...] = ()
    serving_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentRow:
    target: str
    ref: str
    state: str


@dataclass(frozen=True)
class ModelsPanel:
    rows: tuple[ModelRow, ...] = ()
    deployments: tuple[DeploymentRow, ...] = ()
    targets: tuple[str, ...] = ("local",)
    error: str = ""


@dataclass(frozen=True)
class JobRow:
    job_id: str
    kind: str
    model: str
    state: str  # queued | running | done | failed | cancelled ...
    progress: float | None = None  # 0..1
    eta_s: float | None = None
    detail: str = ""
    started_at: float | None = None
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    attempt: int = 1
    result: str = ""  # what it produced (a version), once finished

    @property
    def cancellable(self) -> bool:
        return self.state in ("queued", "running", "starting", "pending")


@dataclass(frozen=True)
class JobsPanel:
    status: str = "ok"  # ok | not-available
    reason: str = ""
    jobs: tuple[JobRow, ...] = ()


@dataclass(frozen=True)
class Curve:
    """One numeric signal a job logged (learning rate, grad norm, ...): values at their steps."""

    name: str
    steps: tuple[float, ...] = ()
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class Signal:
    """How the Loss pane names a signal: in the title and legend, and the unit of its y axis.
    `scale` turns the logged value into that unit (bytes into GiB)."""

    words: str
    short: str
    unit: str
    scale: float = 1.0


# The signals the training callback logs, in the order the pane's signal key cycles them; any
# other numeric field of a progress or eval event is shown too, after these, named from its key.
SIGNALS = {
    "loss": Signal("train loss", "Loss", "loss"),
    "eval_loss": Signal("eval loss", "Eval loss", "loss"),
    "learning_rate": Signal("learning rate", "LR", "learning rate"),
    "grad_norm": Signal("gradient norm", "Grad norm", "norm"),
    "tokens_per_s": Signal("tokens per second", "Tokens/s", "tokens/s"),
    "samples_per_s": Signal("samples per second", "Samples/s", "samples/s"),
    "step_time_s": Signal("step time", "Step time", "seconds"),
    "memory_bytes": Signal("memory", "Memory", "GiB", 1.0 / (1 << 30)),
    "eval_perplexity": Signal("eval perplexity", "Perplexity", "perplexity"),
}


def signal_info(name: str) -> Signal:
    known = SIGNALS.get(name)
    if known is not None:
        return known
    words = name.replace("_per_s", "/s").replace("_", " ")
    return Signal(words, words[:1].upper() + words[1:], words)


@dataclass(frozen=True)
class LossSeries:
    """The full series; the loss pane downsamples for drawing, never truncates. Train and eval
    loss have their own fields; every other signal the job logged is in `signals`."""

    job_id: str | None
    train_steps: tuple[float, ...] = ()
    train_loss: tuple[float, ...] = ()
    eval_steps: tuple[float, ...] = ()
    eval_loss: tuple[float, ...] = ()
    status: str = "ok"  # ok | no-job | not-available
    reason: str = ""
    max_steps: int | None = None  # from the job's last progress event, for the pane's title
    eta_s: float | None = None  # while the job runs
    signals: tuple[Curve, ...] = ()
    clock: RunClock = RunClock()  # tokens seen and wall time at each logged step
    checkpoints: tuple[float, ...] = ()  # steps with a saved checkpoint

    def curve(self, name: str) -> Curve:
        if name == "loss":
            return Curve(name, self.train_steps, self.train_loss)
        if name == "eval_loss":
            return Curve(name, self.eval_steps, self.eval_loss)
        return next((curve for curve in self.signals if curve.name == name), Curve(name))

    @property
    def signal_names(self) -> tuple[str, ...]:
        """The signals with at least one value: the known ones in their order, then the rest."""
        present_names = [name for name, values in (("loss", self.train_loss),
                                                   ("eval_loss", self.eval_loss)) if values]
        present_names += [curve.name for curve in self.signals if curve.values]
        order = list(SIGNALS)
        return tuple(sorted(present_names, key=lambda name: (
            order.index(name) if name in order else len(order), name)))


def model_family(ref: str, models: ModelsPanel | None) -> str:
    """The model a version descends from, as the registry records it: the root of its parent
    chain (a fine-tune registered under a new name still belongs to its base model's family)."""
    rows = {row.ref: row for row in (models.rows if models is not None else ())}
    seen: set[str] = set()
    while ref in rows and rows[ref].parent and ref not in seen:
        seen.add(ref)
        ref = rows[ref].parent  # type: ignore[assignment]
    row = rows.get(ref)
    return row.model if row is not None else ref.split("@", 1)[0]


BASELINE_STATES = ("running", "finished", "done")


def baseline_candidates(jobs: JobsPanel | None, models: ModelsPanel | None,
                        current: str | None) -> tuple[JobRow, ...]:
    """The jobs another run can be compared with: running or finished, of the same model family
    as the job shown (any family when no job is shown), the job itself left out."""
    rows = jobs.jobs if jobs is not None else ()
    shown = next((job for job in rows if job.job_id == current), None)
    family = model_family(shown.model, models) if shown is not None and shown.model else None
    return tuple(job for job in rows if job.job_id != current and job.state in BASELINE_STATES
                 and (family is None or model_family(job.model, models) == family))


@dataclass(frozen=True)
class EventRow:
    """One action: an audit row (origin 'audit', result as the registry has it: ok, pending,
    failed...) or something only this console knows (origin 'console': a refused key, an
    error the engine raised before writing anything, a broken theme file)."""

    at: float
    level: str  # info | warning | error
    text: str
    origin: str = "console"
    verb: str = ""
    result: str = ""
    user: str = ""
    arguments: tuple[tuple[str, str], ...] = ()
    detail: str = ""
    reason: str = ""


@dataclass(frozen=True)
class EventsPanel:
    events: tuple[EventRow, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class DeckInfo:
    """What the header says besides the server: which box and which deck home."""

    host: str = ""
    home: str = ""


@dataclass(frozen=True)
class Availability:
    """Whether an engine verb the console offers exists yet, and why not."""

    finetune: str | None = None  # None: available; else the reason it is not
    compress: str | None = None
    cancel: str | None = None
    compress_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """Everything on screen at once (used by the fixed source and the benchmark)."""

    gpus: GpuPanel
    endpoints: EndpointsPanel
    models: ModelsPanel
    jobs: JobsPanel
    loss: LossSeries
    events: EventsPanel
    availability: Availability = field(default_factory=Availability)
    deck: DeckInfo = field(default_factory=DeckInfo)
    runs: tuple[LossSeries, ...] = ()  # other jobs' series, read when one is pinned as a baseline


def local_server_row(panel: EndpointsPanel | None) -> EndpointRow | None:
    rows = panel.endpoints if panel is not None else ()
    return next((row for row in rows if row.name == LOCAL_ENDPOINT), None)


def sparkline(values: tuple[float, ...] | list[float], width: int, top: float | None = None) -> str:
    """The last `width` values as block characters, scaled to `top` (or their maximum). Zero is
    the lowest block, a baseline you can see (a blank would read as 'no data'); any value above
    zero is at least one step higher, so idle and barely busy stay apart."""
    recent = list(values)[-width:] if width > 0 else []
    if not recent:
        return ""
    ceiling = top if top else max(recent) or 1.0
    steps = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[1] if value <= 0 else
                   SPARK_BLOCKS[max(2, min(steps, round(value / ceiling * steps)))]
                   for value in recent)
