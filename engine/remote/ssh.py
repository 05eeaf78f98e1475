"""Running `modeldeck` on a fleet host through the system `ssh` client.

The system client, not a library, so ~/.ssh/config, agents, jump hosts and known_hosts work as
the user set them up. Always BatchMode=yes (a prompt would hang a poll), a connect timeout, and
connection sharing: the first call to a host starts a ControlMaster that later calls reuse for
ControlPersist seconds, so a console tick does not pay a handshake per host.
MODELDECK_SSH_CONFIG names an ssh config file to use instead of ~/.ssh/config (`ssh -F`).

The remote command is one string (ssh joins its words for the remote shell anyway), built only
from shlex-quoted words: nothing from deck.toml reaches the remote shell unquoted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.host_settings import HostSettings

CONFIG_ENV = "MODELDECK_SSH_CONFIG"
CONTROL_PERSIST_S = 60
# sun_path holds 108 bytes and ssh adds a 17-character suffix while it creates the socket.
SOCKET_PATH_LIMIT = 90
CHUNK_BYTES = 256 << 10


@dataclass(frozen=True)
class SshResult:
    returncode: int  # 255: ssh itself failed (no connection); else the remote command's
    stdout: bytes
    stderr: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        return failure_reason(self.returncode, self.stderr)


def control_dir(run_dir: Path) -> Path:
    """run/ssh under the deck home, or a short private directory when that path is too long
    for a Unix socket name."""
    preferred = run_dir / "ssh"
    if len(str(preferred)) + 14 <= SOCKET_PATH_LIMIT:
        directory = preferred
    else:
        digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:10]
        directory = Path(tempfile.gettempdir()) / f"mdssh-{os.getuid()}-{digest}"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # the sockets grant a session on every host: ours alone
    return directory


def control_path(run_dir: Path, host: HostSettings) -> Path:
    key = f"{host.name}\0{host.ssh}\0{os.environ.get(CONFIG_ENV, '')}"
    return control_dir(run_dir) / hashlib.sha256(key.encode()).hexdigest()[:12]


def ssh_options(run_dir: Path, host: HostSettings) -> list[str]:
    config = os.environ.get(CONFIG_ENV)
    return [*(["-F", config] if config else []),
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(host.connect_timeout_s))}",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={control_path(run_dir, host)}",
            "-o", f"ControlPersist={CONTROL_PERSIST_S}", "-o", "LogLevel=ERROR"]


def remote_command(host: HostSettings, arguments: Iterable[str]) -> str:
    """`env [MODELDECK_HOME=...] <modeldeck words> <arguments>`, every word quoted (`env`, so that
    a `VAR=value` word of the command line still sets a variable once quoted)."""
    words = ["env", *([f"MODELDECK_HOME={host.home}"] if host.home else []),
             *host.command_words, *arguments]
    return " ".join(shlex.quote(word) for word in words)


def ssh_argv(run_dir: Path, host: HostSettings, command: str) -> list[str]:
    # `--` ends ssh's options: the destination can never be read as one.
    return ["ssh", *ssh_options(run_dir, host), "--", host.ssh, command]


def run_remote(run_dir: Path, host: HostSettings, arguments: Iterable[str], *,
               timeout_s: float | None = None, stdin: bytes | None = None) -> SshResult:
    """Run modeldeck on the host; a host that does not answer in time is returncode 255 with
    "timed out" (the ssh process is killed, never left behind)."""
    return run_command(run_dir, host, remote_command(host, arguments), timeout_s=timeout_s,
                       stdin=stdin)


def run_command(run_dir: Path, host: HostSettings, command: str, *,
                timeout_s: float | None = None, stdin: bytes | None = None) -> SshResult:
    """run_remote for a command already built from remote_command() pieces."""
    argv = ssh_argv(run_dir, host, command)
    started = time.monotonic()
    try:
        done = subprocess.run(argv, input=stdin if stdin is not None else b"",
                              capture_output=True, timeout=timeout_s or host.timeout_s)
    except subprocess.TimeoutExpired:
        return SshResult(255, b"", "timed out", time.monotonic() - started)
    except OSError as error:  # no ssh client installed
        return SshResult(255, b"", f"cannot run ssh: {error.strerror}", time.monotonic() - started)
    return SshResult(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"),
                     time.monotonic() - started)


_KNOWN_REASONS = (
    (re.compile(r"connection refused", re.I), "connection refused"),
    (re.compile(r"permission denied \(([^)]*)\)", re.I), "permission denied ({0})"),
    (re.compile(r"timed out|timeout", re.I), "timed out"),
    (re.compile(r"could not resolve hostname", re.I), "could not resolve hostname"),
    (re.compile(r"host key verification failed", re.I), "host key verification failed"),
    (re.compile(r"no route to host", re.I), "no route to host"),
    (re.compile(r"connection closed|connection reset", re.I), "connection closed"),
)


def failure_reason(returncode: int, stderr: str) -> str:
    """One short line: ssh's own reason when ssh failed (255), else what the remote command said."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if returncode == 255:
        for pattern, wording in _KNOWN_REASONS:
            for line in lines:
                if match := pattern.search(line):
                    return wording.format(*match.groups())
    last = lines[-1] if lines else f"exit status {returncode}"
    last = re.sub(r"^((ssh|error|modeldeck):\s*)+", "", last, flags=re.I)
    prefix = "" if returncode == 255 else f"remote modeldeck failed (exit {returncode}): "
    return (prefix + last)[:200]


def master_pid(run_dir: Path, host: HostSettings) -> int | None:
    """The pid of the host's shared connection (`ssh -O check`), None when there is none."""
    done = subprocess.run(["ssh", *ssh_options(run_dir, host), "-O", "check", "--", host.ssh],
                          capture_output=True, text=True, timeout=10)
    found = re.search(r"pid=(\d+)", done.stderr + done.stdout)
    return int(found.group(1)) if done.returncode == 0 and found else None


def close_master(run_dir: Path, host: HostSettings) -> None:
    subprocess.run(["ssh", *ssh_options(run_dir, host), "-O", "exit", "--", host.ssh],
                   capture_output=True, timeout=10)


def ssh_transport(run_dir: Path, host: HostSettings) -> Any:
    """An httpx transport that carries each request to `modeldeck fleet receive` on the host
    over ssh, so HTTP clients written for a deck's /control routes work over ssh unchanged."""
    import httpx

    class SshTransport(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return _exchange(run_dir, host, request)

    return SshTransport()


def _exchange(run_dir: Path, host: HostSettings, request: Any) -> Any:
    """One request: a JSON head line then the body on the remote's stdin; its stdout is one JSON
    line {"status", "body"}."""
    import json

    import httpx

    head = {"method": request.method, "path": request.url.path,
            "headers": {key: value for key, value in request.headers.items()
                        if key.lower().startswith("x-") or key.lower() == "content-type"}}
    argv = ssh_argv(run_dir, host, remote_command(host, ["fleet", "receive"]))
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=errors)
        assert process.stdin is not None and process.stdout is not None
        watchdog = _Watchdog(process, host.timeout_s)  # killed when no progress for timeout_s
        try:
            process.stdin.write(json.dumps(head).encode() + b"\n")
            for chunk in request.stream:
                process.stdin.write(chunk)
                watchdog.progress()
            process.stdin.close()
            answer = process.stdout.read()
        except (BrokenPipeError, OSError):
            process.kill()
            answer = b""
        finally:
            watchdog.stop()
            process.wait()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    try:
        reply = json.loads(answer)
    except ValueError:
        raise httpx.ConnectError(failure_reason(process.returncode or 255, stderr)) from None
    return httpx.Response(int(reply["status"]), json=reply.get("body"))


class _Watchdog:
    """Kills a process that makes no progress for timeout_s (a hung host never hangs a push)."""

    def __init__(self, process: subprocess.Popen, timeout_s: float) -> None:
        self.process, self.timeout_s = process, timeout_s
        self.timer: threading.Timer | None = None
        self.progress()

    def progress(self) -> None:
        self.stop()
        self.timer = threading.Timer(self.timeout_s, self.process.kill)
        self.timer.daemon = True
        self.timer.start()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
