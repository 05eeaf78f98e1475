"""A real OpenSSH server on a loopback port for the fleet tests (Debian's openssh-server).

It runs as the current user with its own generated host key, `-D -e` (foreground, log to
stderr), StrictModes no, and a generated client key in its authorized_keys. The client side is
an ssh config file (MODELDECK_SSH_CONFIG, i.e. `ssh -F`) with one Host alias per fleet host,
all of them this sshd, each host then told apart by its deck home.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_sshd() -> str | None:
    return shutil.which("sshd") or next((path for path in ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
                                         if os.access(path, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sshd:
    """start() -> the server is accepting; stop() ends it (and only it)."""

    def __init__(self, sshd: str) -> None:
        # Short: control sockets and the like live under paths derived from here.
        self.directory = Path(tempfile.mkdtemp(prefix="mdf-"))
        self.sshd, self.port, self.user = sshd, free_port(), getpass.getuser()
        self.process: subprocess.Popen | None = None
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                            "-f", str(self.directory / name)], check=True)
        shutil.copy(self.directory / "client_key.pub", self.directory / "authorized_keys")
        host_key = (self.directory / "host_key.pub").read_text().split()
        (self.directory / "known_hosts").write_text(
            f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n")
        (self.directory / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.directory / 'host_key'}",
            f"AuthorizedKeysFile {self.directory / 'authorized_keys'}", "StrictModes no",
            "PidFile none", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "PermitRootLogin prohibit-password", f"AllowUsers {self.user}",
            "MaxSessions 50", "MaxStartups 50", ""]))

    def start(self) -> None:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege-separation dir
        self.log = open(self.directory / "sshd.log", "wb")
        self.process = subprocess.Popen([self.sshd, "-D", "-e", "-f",
                                         str(self.directory / "sshd_config")],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.directory / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening in 10 s")

    def write_client_config(self, aliases: dict[str, int], unauthorized: tuple[str, ...] = ()) -> Path:
        """An ssh config with one Host block per alias -> port (a wrong port: a host that is
        down); the `unauthorized` aliases offer a key sshd does not accept."""
        blocks = []
        for alias, port in aliases.items():
            key = "host_key" if alias in unauthorized else "client_key"
            blocks.append("\n".join([
                f"Host {alias}", "  HostName 127.0.0.1", f"  Port {port}", f"  User {self.user}",
                f"  IdentityFile {self.directory / key}", "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {self.directory / 'known_hosts'}",
                "  StrictHostKeyChecking yes", "  IdentityAgent none", ""]))
        path = self.directory / "ssh_config"
        path.write_text("\n".join(blocks))
        return path

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)
