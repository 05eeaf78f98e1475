"""Whether a process we recorded (server, job supervisor) still runs."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True while `pid` runs. An exited child nobody reaped yet (a zombie) counts as gone: PID 1
    in a container may never reap it, and `kill -0` would call it alive forever."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, just not ours to signal
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill -0 is all we know
    return state != "Z"
