"""Polls every configured serving endpoint at once: a health probe and a /metrics scrape each.

All endpoints are polled concurrently (httpx.AsyncClient, one small pool per endpoint). An
endpoint's two requests (health probe, then /metrics on the same connection) are each bounded by
its timeout as a whole (connect, read, and a server that trickles bytes); an endpoint that does
not answer the probe is not scraped. A dead, slow or malformed endpoint never stalls the others:
a tick takes at most twice the largest timeout (once for an endpoint that is plainly down), not
their sum. The API key is sent as a bearer token and kept in this object only; it never enters
a snapshot, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.config import EndpointSettings
from engine.errors import DeckError
from engine.remote.derive import Window, merge_histograms, percentiles, window
from engine.remote.metrics import MalformedMetrics, Scrape, parse_scrape
from engine.snapshots import EndpointSnapshot, LoadedModel, ModelStats

HEALTH_PATHS = {"vllm": "/health", "tgi": "/health", "llamacpp": "/health",
                "modeldeck": "/health", "openai": "/v1/models", "ollama": "/api/version"}
METRICS_OPTIONAL = {"openai"}  # OpenAI-compatible servers often have no /metrics
# Ollama publishes no serving counters at all: its rates are unknown, never shown as zeros.
NOT_OBSERVABLE = "throughput not observable (Ollama has no /metrics)"


@dataclass(frozen=True)
class Fetched:
    """One GET: the body when it answered 2xx, else why not."""

    ok: bool
    http_status: int | None = None
    body: str | None = None
    reason: str | None = None  # refused | timeout | tls | dns | http 503 | ...
    connected: bool = False  # the server answered at all (any HTTP status)
    latency_s: float | None = None


@dataclass
class _EndpointState:
    settings: EndpointSettings
    headers: dict[str, str]
    secret_problem: str | None
    last_scrape: Scrape | None = None
    last_up_at: float | None = None
    last_window: Window | None = None
    tokens_history: deque | None = None


class EndpointPoller:
    """One instance per sampler (it remembers the previous scrape of each endpoint)."""

    def __init__(self, endpoints: Sequence[EndpointSettings], history_points: int = 600) -> None:
        self._states = [_state_for(settings, history_points) for settings in endpoints]
        self._clients: dict[str, Any] = {}
        self._retired: list[Any] = []
        self._tls_contexts: dict[bool, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.latest: tuple[EndpointSnapshot, ...] = tuple(
            _initial(state.settings) for state in self._states)

    @property
    def longest_timeout_s(self) -> float:
        return max((state.settings.timeout_s for state in self._states), default=0.0)

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        return tuple(state.settings.name for state in self._states)

    async def poll(self) -> tuple[EndpointSnapshot, ...]:
        """One tick: every endpoint concurrently; returns (and keeps) their snapshots."""
        snapshots = await asyncio.gather(*(self._poll_one(state) for state in self._states))
        await self._close_retired()
        self.latest = tuple(snapshots)
        return self.latest

    def poll_blocking(self) -> tuple[EndpointSnapshot, ...]:
        """poll() from synchronous code, on this poller's own event loop (kept across ticks so
        connections are reused)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self.poll())

    def models(self) -> tuple[ModelStats, ...]:
        """The last tick's endpoints merged per model (deck.toml `model`, else endpoint name)."""
        groups: dict[str, list[tuple[_EndpointState, EndpointSnapshot]]] = {}
        for state, snapshot in zip(self._states, self.latest):
            groups.setdefault(snapshot.model or snapshot.name, []).append((state, snapshot))
        return tuple(_merge(model, members) for model, members in groups.items())

    async def aclose(self) -> None:
        await self._close_retired()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self.aclose())
            self._loop.close()
        self._loop = None

    # ---- one endpoint -------------------------------------------------------------------------

    async def _poll_one(self, state: _EndpointState) -> EndpointSnapshot:
        settings = state.settings
        checked_at = time.time()
        if state.secret_problem:
            return _snapshot(settings, "down", state.secret_problem, checked_at=checked_at,
                             last_up_at=state.last_up_at)
        # One keep-alive connection, health then /metrics: measured, 15% less CPU per tick than
        # two concurrent connections, and no slower. Each request has the full timeout (a shared
        # deadline made every scrape time out when this process was short of CPU).
        health = await self._fetch(state, HEALTH_PATHS[settings.kind])
        if settings.kind == "ollama":
            return await self._poll_ollama(state, health, checked_at)
        if health.connected:
            metrics = await self._fetch(state, "/metrics")
        else:  # refused, timed out, TLS: the scrape would fail the same way
            metrics = Fetched(False, reason=health.reason)
        status, reason, scrape = _judge(settings, health, metrics)
        if status == "down":
            state.last_window = None
            return _snapshot(settings, "down", reason, health.http_status, checked_at=checked_at,
                             last_up_at=state.last_up_at, history=state.tokens_history)
        state.last_up_at = checked_at
        measured = window(state.last_scrape, scrape) if scrape else None
        state.last_window = measured  # what models() merges: only this tick's numbers
        if scrape is not None:
            state.last_scrape = scrape
        if measured is not None and measured.tokens_per_s is not None \
                and state.tokens_history is not None:
            state.tokens_history.append(round(measured.tokens_per_s, 3))
        return _snapshot(settings, status, reason, health.http_status, health.latency_s,
                         checked_at, state.last_up_at, measured, state.tokens_history)

    async def _poll_ollama(self, state: _EndpointState, health: Fetched,
                           checked_at: float) -> EndpointSnapshot:
        """/api/version as the probe, /api/ps for the models loaded now; no rates."""
        settings = state.settings
        if not health.ok:
            status = "degraded" if health.connected else "down"
            return _snapshot(settings, status, health.reason, health.http_status,
                             checked_at=checked_at, last_up_at=state.last_up_at,
                             observable=False)
        state.last_up_at = checked_at
        loaded = await self._fetch(state, "/api/ps")
        models = ollama_loaded_models(loaded.body) if loaded.ok else None
        status, reason = ("up", NOT_OBSERVABLE) if models is not None else (
            "degraded", f"/api/ps: {loaded.reason or 'not the JSON Ollama sends'}; {NOT_OBSERVABLE}")
        return _snapshot(settings, status, reason, health.http_status, health.latency_s,
                         checked_at, state.last_up_at, observable=False, loaded=models or ())

    async def _fetch(self, state: _EndpointState, path: str) -> Fetched:
        import httpx

        settings = state.settings
        started = time.monotonic()
        client = self._client(settings)
        try:
            response = await asyncio.wait_for(
                client.get(settings.url + path, headers=state.headers, timeout=settings.timeout_s),
                settings.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            self._retire_client(settings.name)
            return Fetched(False, reason="timeout")
        except httpx.HTTPError as error:
            return Fetched(False, reason=describe_http_error(error))
        latency = time.monotonic() - started
        if response.is_success:
            return Fetched(True, response.status_code, response.text, connected=True,
                           latency_s=latency)
        return Fetched(False, response.status_code, reason=f"http {response.status_code}",
                       connected=True, latency_s=latency)

    def _client(self, settings: EndpointSettings) -> Any:
        """One small client per endpoint: httpcore's pool scans all its connections on every
        request event, so one shared pool of hundreds of connections costs quadratic CPU (measured:
        most of a tick's CPU at 200 endpoints). The TLS contexts are shared, being costly."""
        import httpx

        client = self._clients.get(settings.name)
        if client is None:
            client = self._clients[settings.name] = httpx.AsyncClient(
                verify=self._tls_context(settings.verify_tls), follow_redirects=False,
                trust_env=False, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        return client

    def _retire_client(self, name: str) -> None:
        """A request cancelled by a timeout can leave httpcore's pool holding a dead connection
        (then every later request on it times out too: measured): start the endpoint afresh."""
        client = self._clients.pop(name, None)
        if client is not None:
            self._retired.append(client)

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for client in retired:
            try:
                await asyncio.wait_for(client.aclose(), 1.0)
            except Exception:  # a broken pool may fail to close; it is dropped either way
                pass

    def _tls_context(self, verify: bool) -> Any:
        import ssl

        if verify not in self._tls_contexts:
            context = ssl.create_default_context()
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls_contexts[verify] = context
        return self._tls_contexts[verify]


def describe_http_error(error: Exception) -> str:
    """A short reason (refused, tls, dns, ...) from an httpx error and its causes."""
    import ssl

    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    text = " ".join(str(item).lower() for item in chain)
    if any(isinstance(item, ssl.SSLError) for item in chain):
        return "tls"
    if any(isinstance(item, ConnectionRefusedError) for item in chain) or "refused" in text:
        return "refused"
    if "ssl" in text or "certificate" in text:
        return "tls"
    if "name or service" in text or "nodename" in text or "getaddrinfo" in text:
        return "dns"
    if "reset" in text or "disconnect" in text or "closed" in text:
        return "connection closed"
    return f"error: {type(error).__name__}"


def _judge(settings: EndpointSettings, health: Fetched,
           metrics: Fetched) -> tuple[str, str | None, Scrape | None]:
    """up / degraded / down from the two fetches; the scrape when /metrics parsed."""
    scrape, metrics_problem = None, None
    if metrics.ok:
        try:
            scrape = parse_scrape(metrics.body or "", time.monotonic())
            if scrape.non_finite:  # NaN/Inf: rates and percentiles would be NaN too; unknown
                metrics_problem = _non_finite_reason(scrape.non_finite)
                scrape = None
            elif not scrape.known:
                scrape, metrics_problem = None, "no serving metrics in /metrics"
        except MalformedMetrics as error:
            metrics_problem = str(error)
    elif not (settings.kind in METRICS_OPTIONAL and metrics.http_status == 404):
        metrics_problem = f"/metrics: {metrics.reason}"
    if not health.ok and not metrics.ok:
        return "down", health.reason, None
    if not health.ok:
        return "degraded", f"health: {health.reason}", scrape
    if metrics_problem:
        return "degraded", metrics_problem, None
    return "up", None, scrape


def _non_finite_reason(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"/metrics: non-finite values (NaN/Inf) in {shown}"


def _state_for(settings: EndpointSettings, history_points: int) -> _EndpointState:
    headers: dict[str, str] = {}
    problem = None
    try:
        secret = settings.resolve_secret()
    except DeckError:
        secret, problem = None, "api key file cannot be read"
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return _EndpointState(settings, headers, problem, tokens_history=deque(maxlen=history_points))


def _initial(settings: EndpointSettings) -> EndpointSnapshot:
    return _snapshot(settings, "stale", "not polled yet")


def _snapshot(settings: EndpointSettings, status: str, reason: str | None,
              http_status: int | None = None, latency_s: float | None = None,
              checked_at: float | None = None, last_up_at: float | None = None,
              measured: Window | None = None, history: deque | None = None,
              observable: bool = True, loaded: tuple[LoadedModel, ...] = ()) -> EndpointSnapshot:
    fields: dict[str, Any] = {"throughput_observable": observable, "loaded_models": loaded}
    if measured is not None:
        fields |= {"tokens_per_s": measured.tokens_per_s,
                  "prompt_tokens_per_s": measured.prompt_tokens_per_s,
                  "requests_per_s": measured.requests_per_s, "running": measured.running,
                  "waiting": measured.waiting,
                  "kv_cache_pct": (measured.kv_cache_fraction * 100
                                   if measured.kv_cache_fraction is not None else None)}
        for logical in ("ttft", "itl", "e2e"):
            p50, p95, p99 = percentiles(measured.latency_deltas.get(logical))
            fields.update({f"{logical}_p50_s": p50, f"{logical}_p95_s": p95,
                           f"{logical}_p99_s": p99})
    return EndpointSnapshot(settings.name, settings.kind, settings.url, status, reason,  # type: ignore[arg-type]
                            settings.model or settings.name, http_status, latency_s, checked_at,
                            last_up_at, tokens_history=tuple(history or ()), **fields)


def ollama_loaded_models(body: str | None) -> tuple[LoadedModel, ...] | None:
    """Ollama's /api/ps `models` (name, size, size_vram, expires_at); None if it is not that."""
    import json

    try:
        entries = json.loads(body or "").get("models")
    except (ValueError, AttributeError):
        return None
    if not isinstance(entries, list):
        return None
    return tuple(LoadedModel(str(entry.get("name") or entry.get("model") or "?"),
                             _whole(entry.get("size")), _whole(entry.get("size_vram")),
                             entry.get("expires_at") if isinstance(entry.get("expires_at"), str)
                             else None)
                 for entry in entries[:64] if isinstance(entry, dict))


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _merge(model: str, members: list[tuple[_EndpointState, EndpointSnapshot]]) -> ModelStats:
    live = [(state, snap) for state, snap in members if snap.status in ("up", "degraded")]
    windows = [state.last_window for state, _ in live if state.last_window is not None]
    fields: dict[str, Any] = {
        "tokens_per_s": _sum(w.tokens_per_s for w in windows),
        "requests_per_s": _sum(w.requests_per_s for w in windows),
        "running": _sum(w.running for w in windows), "waiting": _sum(w.waiting for w in windows)}
    for logical in ("ttft", "itl", "e2e"):
        merged = merge_histograms(w.latency_deltas[logical] for w in windows
                                  if logical in w.latency_deltas)
        p50, p95, p99 = percentiles(merged)
        fields.update({f"{logical}_p50_s": p50, f"{logical}_p95_s": p95, f"{logical}_p99_s": p99})
    return ModelStats(model, len(members), len(live), **fields)


def _sum(values: Any) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None
