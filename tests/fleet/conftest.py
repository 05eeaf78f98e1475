"""Fleet fixtures: one real sshd for the session, and per test a local deck plus two host decks
(`a` and `b`) behind two ssh aliases of a generated ssh config. Each host's `modeldeck` is this
checkout's, with its PYTHONPATH, and its `home` is the host's deck home."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.sshd import Sshd, find_sshd, free_port

REPO = Path(__file__).resolve().parents[2]
MODELDECK = f"PYTHONPATH={REPO} {REPO}/.venv/bin/modeldeck"


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    program = find_sshd()
    if program is None:
        pytest.skip("no sshd on this machine (apt-get install openssh-server; `make system-deps`)")
    server = Sshd(program)
    server.start()
    yield server
    server.stop()


class Fleet:
    def __init__(self, root: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.sshd = root, sshd
        self.local = root / "local"
        self.homes = {name: root / name for name in ("a", "b")}
        for home in self.homes.values():
            home.mkdir()
            (home / "deck.toml").write_text("[serve]\nautostart = false\n")
        self.config = sshd.write_client_config(
            {"fleet-a": sshd.port, "fleet-b": sshd.port, "fleet-nokey": sshd.port,
             "fleet-down": free_port()}, unauthorized=("fleet-nokey",))
        monkeypatch.setenv("MODELDECK_SSH_CONFIG", str(self.config))
        monkeypatch.setenv("MODELDECK_HOME", str(self.local))
        monkeypatch.delenv("MODELDECK_CONFIG", raising=False)

    def write_hosts(self, *hosts: tuple[str, str], extra: dict[str, str] | None = None,
                    homes: dict[str, Path] | None = None) -> None:
        """deck.toml [[hosts]] for (name, ssh alias) pairs; host `a`/`b` use their own homes."""
        self.local.mkdir(exist_ok=True)
        blocks = []
        for name, alias in hosts:
            home = {**self.homes, **(homes or {})}.get(name, self.root / name)
            lines = [f'name = "{name}"', f'ssh = "{alias}"', f"modeldeck = '{MODELDECK}'",
                     f"home = '{home}'", "connect_timeout_s = 5", "timeout_s = 60"]
            more = (extra or {}).get(name, "")
            # A loaded CI box may take seconds to answer: `stale` only where a test asks for it.
            lines += more.splitlines() + ([] if "stale_after_s" in more else ["stale_after_s = 60"])
            blocks.append("[[hosts]]\n" + "\n".join(lines) + "\n")
        (self.local / "deck.toml").write_text("\n".join(blocks))

    def close(self) -> None:
        """End the shared connections this test's deck started (their sockets are its own)."""
        from engine.config import load_config
        from engine.remote.ssh import close_master

        if (self.local / "deck.toml").exists():
            for host in load_config(self.local / "deck.toml").hosts:
                close_master(self.local / "run", host)


@pytest.fixture
def fleet(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="f", dir=sshd.directory))
    made = Fleet(root, sshd, monkeypatch)
    yield made
    made.close()
    shutil.rmtree(root, ignore_errors=True)


def modeldeck_on(home: Path, *args: str) -> subprocess.CompletedProcess:
    """Run this checkout's modeldeck directly against a host's deck home (to check its side)."""
    import os

    env = {**os.environ, "MODELDECK_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("MODELDECK_CONFIG", None)
    return subprocess.run([str(REPO / ".venv/bin/modeldeck"), *args], capture_output=True,
                          text=True, env=env, timeout=120)
