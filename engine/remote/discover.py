"""Serving engines already running on this box, found from their processes and listening ports.

A process is a candidate when its name or command line names an engine (vLLM, llama.cpp's
llama-server, Ollama, SGLang, TGI, LM Studio, a modeldeck server) or it listens on an engine's
well-known port. Each of its listening TCP ports is probed on loopback (short timeouts, a handful
of GETs: /api/version, /metrics, /v1/models, /health) and the answers decide the endpoint kind;
a port that answers none of them is left out (a process may listen on a control port too).

Nothing here writes anything; engine.actions.discovery turns the result into deck.toml entries.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PROBE_TIMEOUT_S = 1.0
MAX_CANDIDATE_PORTS = 64  # a bound on the probes of one discovery (each is a few GETs)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0", "::", "[::]"})

# engine -> (what its process shows, the endpoint kind deck.toml gets when probes do not say)
# Matched against the process name and each command-line word, lower case.
PROCESS_HINTS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("modeldeck", re.compile(r"^engine\.(serving|targets\.local)|modeldeck"), "modeldeck"),
    ("vllm", re.compile(r"(^|[/.])vllm($|[.:])|vllm\.entrypoints"), "vllm"),
    ("sglang", re.compile(r"sglang"), "openai"),
    ("tgi", re.compile(r"text-generation-(launcher|router|server)"), "tgi"),
    ("llama.cpp", re.compile(r"(^|/)llama-server$|llama_cpp\.server"), "llamacpp"),
    ("ollama", re.compile(r"(^|/)ollama$"), "ollama"),
    ("lm-studio", re.compile(r"lm[ -]?studio|(^|/)lms$"), "openai"),
)
WELL_KNOWN_PORTS = {11434: "ollama", 1234: "lm-studio"}  # asked even when the name says nothing

# /metrics series prefixes that name the engine (normalised: ':' is '_')
METRICS_PREFIXES = (("vllm_", "vllm"), ("modeldeck_", "modeldeck"), ("llamacpp_", "llamacpp"),
                    ("tgi_", "tgi"), ("sglang_", "openai"))


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket and the process that owns it."""

    pid: int | None
    address: str
    port: int
    process: str  # the process name
    command: tuple[str, ...]  # its command line
    engine: str | None  # from PROCESS_HINTS / WELL_KNOWN_PORTS; None: unknown


@dataclass(frozen=True)
class Discovered:
    """One engine that answered: what it is, where, and what it serves."""

    kind: str  # an endpoint kind: vllm, tgi, llamacpp, openai, modeldeck, ollama
    engine: str  # what it is (sglang and LM Studio are kind openai)
    url: str
    port: int
    pid: int | None
    process: str
    models: tuple[str, ...] = ()
    version: str | None = None  # Ollama's /api/version
    has_metrics: bool = False
    configured_as: str | None = None  # the deck.toml endpoint with this URL, if any
    evidence: tuple[str, ...] = field(default=())  # what decided the kind

    @property
    def configured(self) -> bool:
        return self.configured_as is not None

    @property
    def suggested_name(self) -> str:
        """`<engine>-<port>`: the endpoint name deck.toml gets (made unique there)."""
        return f"{self.engine.replace('.', '')}-{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "configured": self.configured, "name": self.suggested_name}


# ---- processes and ports ---------------------------------------------------------------------


def engine_hint(name: str, command: Sequence[str]) -> str | None:
    words = [name.lower(), *(word.lower() for word in command[:24])]
    for engine, pattern, _ in PROCESS_HINTS:
        if any(pattern.search(word) for word in words):
            return engine
    return None


def default_kind(engine: str) -> str:
    return next((kind for name, _, kind in PROCESS_HINTS if name == engine), "openai")


def listeners(own_pid: int | None = None) -> list[Listener]:
    """Listening TCP sockets of candidate processes (not `own_pid`'s: discovery's own process)."""
    import psutil

    found: dict[tuple[int | None, int], Listener] = {}
    for socket_info in _listening_sockets():
        pid, address, port = socket_info
        if pid is not None and pid == own_pid:
            continue
        name, command = _process_words(psutil, pid)
        engine = engine_hint(name, command) or WELL_KNOWN_PORTS.get(port)
        if engine is None:
            continue
        shown = tuple(word for word in command if word)[:12]  # vLLM workers pad theirs with ''
        found.setdefault((pid, port), Listener(pid, address, port, name, shown, engine))
    return sorted(found.values(), key=lambda item: item.port)[:MAX_CANDIDATE_PORTS]


def _listening_sockets() -> list[tuple[int | None, str, int]]:
    """(pid, address, port) of LISTEN sockets; per process where the system-wide table is
    refused (macOS and unprivileged users see only their own processes' sockets then)."""
    import psutil

    try:
        connections: Iterable[Any] = psutil.net_connections(kind="tcp")
        return [(c.pid, c.laddr.ip, c.laddr.port) for c in connections
                if c.status == psutil.CONN_LISTEN and c.laddr]
    except (psutil.AccessDenied, PermissionError):
        pass
    found = []
    for process in psutil.process_iter():
        try:
            for c in process.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr:
                    found.append((process.pid, c.laddr.ip, c.laddr.port))
        except psutil.Error:
            continue
    return found


def _process_words(psutil: Any, pid: int | None) -> tuple[str, list[str]]:
    if pid is None:
        return "", []
    try:
        process = psutil.Process(pid)
        return process.name(), process.cmdline()
    except psutil.Error:
        return "", []


def probe_host(address: str) -> str:
    """Loopback where the socket takes it; else the address it is bound to."""
    if address in LOOPBACK_HOSTS or address.startswith("127."):
        return "[::1]" if address in ("::1",) else "127.0.0.1"
    return f"[{address}]" if ":" in address else address


# ---- probes ------------------------------------------------------------------------------------


async def _get(client: Any, url: str) -> tuple[int | None, str]:
    import httpx

    try:
        response = await asyncio.wait_for(client.get(url), PROBE_TIMEOUT_S * 1.5)
    except (asyncio.TimeoutError, httpx.HTTPError):
        return None, ""
    return response.status_code, response.text[:400_000]


async def probe(listener: Listener) -> Discovered | None:
    """The kind and models of the engine behind one port, or None when it answers nothing an
    engine would."""
    import httpx

    base = f"http://{probe_host(listener.address)}:{listener.port}"
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, trust_env=False,
                                 follow_redirects=False) as client:
        version_status, version_body = await _get(client, base + "/api/version")
        if version_status is None:
            return None  # no HTTP answer at all (an RPC port of the engine's workers)
        ollama_version = _ollama_version(version_status, version_body)
        if ollama_version is not None or listener.engine == "ollama":
            if ollama_version is None:
                return None
            tags_status, tags_body = await _get(client, base + "/api/tags")
            models = _json_names(tags_body, "models") if tags_status == 200 else ()
            return _found(listener, "ollama", "ollama", base, models, version=ollama_version,
                          evidence=("/api/version",))
        metrics_status, metrics_body = await _get(client, base + "/metrics")
        models_status, models_body = await _get(client, base + "/v1/models")
    metrics_kind = _metrics_kind(metrics_body) if metrics_status == 200 else None
    models = _json_names(models_body, "data") if models_status == 200 else ()
    engine = listener.engine or "openai"
    if metrics_kind is None and models_status != 200:
        if listener.engine is not None and {metrics_status, models_status} & {401, 403}:
            # an engine that wants an API key: what it is comes from its process alone
            return _found(listener, default_kind(engine), engine, base, (),
                          evidence=("process", "needs an API key"))
        return None  # not an OpenAI-compatible server (a control or RPC port)
    kind = metrics_kind or default_kind(engine)
    if kind == "ollama":  # named ollama but not answering as one: an OpenAI-compatible port
        kind = "openai"
    evidence = tuple(item for item, present in (("/metrics", metrics_kind is not None),
                                                ("/v1/models", models_status == 200),
                                                ("process", listener.engine is not None))
                     if present)
    return _found(listener, kind, engine if engine != "openai" else kind, base, models,
                  has_metrics=metrics_kind is not None, evidence=evidence)


def _found(listener: Listener, kind: str, engine: str, base: str, models: tuple[str, ...],
           **extra: Any) -> Discovered:
    return Discovered(kind, engine, base, listener.port, listener.pid, listener.process,
                      models, **extra)


def _ollama_version(status: int | None, body: str) -> str | None:
    if status != 200:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    version = document.get("version") if isinstance(document, dict) else None
    return str(version) if isinstance(version, str) and len(document) <= 3 else None


def _metrics_kind(body: str) -> str | None:
    """Which engine's series a /metrics body carries (the first known prefix by count)."""
    counts: dict[str, int] = {}
    for line in body.splitlines()[:5000]:
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0].lower().replace(":", "_")
        for prefix, kind in METRICS_PREFIXES:
            if name.startswith(prefix):
                counts[kind] = counts.get(kind, 0) + 1
    return max(counts, key=lambda kind: counts[kind]) if counts else None


def _json_names(body: str, key: str) -> tuple[str, ...]:
    """The `id` (OpenAI) or `name` (Ollama) of each entry of a JSON list under `key`."""
    try:
        entries = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return ()
    if not isinstance(entries, list):
        return ()
    names = [entry.get("id") or entry.get("name") for entry in entries if isinstance(entry, dict)]
    return tuple(str(name) for name in names if isinstance(name, str))[:32]


# ---- all together ------------------------------------------------------------------------------


def same_endpoint(url_a: str, url_b: str) -> bool:
    """Whether two URLs reach the same server on this box (localhost, 127.0.0.1 and 0.0.0.0
    are one host; a missing port is the scheme's)."""
    return _where(url_a) == _where(url_b)


def _where(url: str) -> tuple[str, str, int | None]:
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return ("", url, None)
    host = parsed.host.lower()
    if host in LOOPBACK_HOSTS or host.startswith("127.") or host == "::1":
        host = "loopback"
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return (parsed.scheme, host, port)


def discover(configured: Sequence[tuple[str, str]] = (),
             own_pid: int | None = None) -> tuple[Discovered, ...]:
    """Every engine on this box that answers; `configured` is deck.toml's (name, url) pairs,
    used to mark the ones already there."""
    found = listeners(own_pid)
    if not found:
        return ()
    results = asyncio.run(_probe_all(found))
    engines = []
    for engine in results:
        if engine is None:
            continue
        name = next((name for name, url in configured if same_endpoint(url, engine.url)), None)
        engines.append(_with(engine, configured_as=name))
    return tuple(engines)


async def _probe_all(found: list[Listener]) -> list[Discovered | None]:
    return list(await asyncio.gather(*(probe(item) for item in found)))


def _with(engine: Discovered, **changes: Any) -> Discovered:
    from dataclasses import replace

    return replace(engine, **changes)
