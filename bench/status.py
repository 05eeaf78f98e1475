"""`modeldeck status --json` wall time (target: median under 300 ms on 2 cores).

Baseline measured in the same run, interleaved: a bare `python -c pass` interpreter start, which
no CLI can beat. Two decks: one with no deck.toml (nothing to validate, so no pydantic) and one
with a deck.toml of endpoints and alert rules (validated, as every verb does). Prints the medians
and the ratios. Run: `.venv/bin/python bench/status.py`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "21"))


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def seed_deck(env: dict[str, str]) -> None:
    """A deck with a few versions and deployments, so status reads real rows."""
    from engine.demo import build_tiny_model

    model = build_tiny_model(Path(env["MODELDECK_HOME"]) / "src" / "tiny")
    for _ in range(3):
        subprocess.run([sys.executable, "-m", "console.cli", "models", "import", str(model),
                        "--name", "tiny"], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "console.cli", "deploy", "tiny@3", "--yes", "--no-start"], cwd=REPO,
                   env=env, check=True, stdout=subprocess.DEVNULL)


DECK_TOML = """[serve]
port = 8123

[[endpoints]]
name = "edge"
kind = "vllm"
url = "http://127.0.0.1:9"

[[alerts]]
name = "queue-building"
when = "endpoint.waiting > 20"
for_s = 60
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as configured:
        # No MODELDECK_<SECTION>_<KEY> overrides: a user's shell has none unless they set one.
        base = {name: value for name, value in os.environ.items() if not name.startswith("MODELDECK_")}
        plain = {**base, "MODELDECK_HOME": home}
        with_toml = {**base, "MODELDECK_HOME": configured}
        seed_deck(plain)
        seed_deck(with_toml)
        (Path(configured) / "deck.toml").write_text(DECK_TOML)
        status_cmd = [sys.executable, "-m", "console.cli", "status", "--json"]
        bare_cmd = [sys.executable, "-c", "pass"]
        timed(status_cmd, plain), timed(status_cmd, with_toml)  # warm the page cache
        samples: dict[str, list[float]] = {"bare": [], "plain": [], "toml": []}
        for _ in range(ROUNDS):
            samples["plain"].append(timed(status_cmd, plain))
            samples["toml"].append(timed(status_cmd, with_toml))
            samples["bare"].append(timed(bare_cmd, plain))
    medians = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
    print(f"{'variant':<40}{'median ms':>10}{'p90 ms':>10}{'vs baseline':>12}")
    for name, label in (("bare", "python -c pass (baseline)"),
                        ("plain", "modeldeck status --json, no deck.toml"),
                        ("toml", "modeldeck status --json, a deck.toml")):
        print(f"{label:<40}{medians[name]:>10.0f}{_p90(samples[name]):>10.0f}"
              f"{medians[name] / medians['bare']:>11.1f}x")
    for name in ("plain", "toml"):
        print(f"target median < 300 ms ({'no deck.toml' if name == 'plain' else 'a deck.toml'}): "
              f"{'met' if medians[name] < 300 else 'MISSED'}")


def _p90(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.9) - 1] * 1e3


if __name__ == "__main__":
    main()
