"""A remote deck for the `kind = "modeldeck"` target tests: its own home with tiny@1 imported
and deployed, served by a real detached `modeldeck serve` on a free loopback port."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import run_modeldeck


def start_remote_deck(remote: Path, model_dir: Path) -> dict[str, Any]:
    """Start it; returns its run/server.json (url, pid, port). Stopping is the caller's."""
    assert run_modeldeck("models", "import", str(model_dir), "--name", "tiny", home=remote).code == 0
    assert run_modeldeck("deploy", "tiny@1", "--yes", home=remote).code == 0
    started = run_modeldeck("serve", "--port", "0", "--dtype", "float32", "--detach", "--json",
                            home=remote, timeout=300)
    assert started.code == 0, started
    return json.loads((remote / "run" / "server.json").read_text())
