"""`modeldeck status --json` wall time (target: median under 300 ms on 2 cores).

Baseline measured in the same run, interleaved: a bare `python -c pass` interpreter start, which
no CLI can beat. Prints both medians and the ratio. Run: `.venv/bin/python bench/status.py`.
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


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MODELDECK_HOME": home}
        seed_deck(env)
        status_cmd = [sys.executable, "-m", "console.cli", "status", "--json"]
        bare_cmd = [sys.executable, "-c", "pass"]
        timed(status_cmd, env)  # warm the page cache
        status_s, bare_s = [], []
        for _ in range(ROUNDS):
            status_s.append(timed(status_cmd, env))
            bare_s.append(timed(bare_cmd, env))
    status_ms, bare_ms = statistics.median(status_s) * 1e3, statistics.median(bare_s) * 1e3
    print(f"{'variant':<28}{'median ms':>10}{'p90 ms':>10}")
    print(f"{'python -c pass (baseline)':<28}{bare_ms:>10.0f}{_p90(bare_s):>10.0f}")
    print(f"{'modeldeck status --json':<28}{status_ms:>10.0f}{_p90(status_s):>10.0f}")
    print(f"ratio status/baseline: {status_ms / bare_ms:.1f}x; target median < 300 ms: "
          f"{'met' if status_ms < 300 else 'MISSED'}")


def _p90(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.9) - 1] * 1e3


if __name__ == "__main__":
    main()
