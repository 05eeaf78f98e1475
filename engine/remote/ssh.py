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

from engine.errors import ActionFailed
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
    if directory.stat().st_uid != os.getuid():  # /tmp is shared: someone made it first
        raise ActionFailed(f"{directory} belongs to another user; remove it (it holds ssh "
                           "connection sockets)")
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
    """An httpx transport that carries requests to `modeldeck fleet receive` on the host over
    one ssh session (one remote process for a whole push), so HTTP clients written for a
    deck's /control routes work over ssh unchanged.

    The protocol (engine.actions.fleet.receive): per request a JSON head line, then the body as
    frames `<length>\\n<bytes>` ending with `0\\n`; per answer one JSON line {"status", "body"}.
    Closing stdin ends the remote process."""
    import httpx

    class SshTransport(httpx.BaseTransport):
        def __init__(self) -> None:
            self.session: _Session | None = None
            self.failure: str | None = None  # ssh's reason when the session broke

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if self.session is None:
                self.session = _Session(run_dir, host)
            try:
                status, body = self.session.exchange(request)
            except _Broken as error:
                self.close()
                self.failure = str(error)
                raise httpx.ConnectError(self.failure) from None
            return httpx.Response(status, json=body)

        def close(self) -> None:
            if self.session is not None:
                self.session.close()
                self.session = None

    return SshTransport()


class _Broken(Exception):
    """The session ended: ssh's (or the remote command's) reason."""


class _Session:
    def __init__(self, run_dir: Path, host: HostSettings) -> None:
        self.errors = tempfile.TemporaryFile()
        argv = ssh_argv(run_dir, host, remote_command(host, ["fleet", "receive"]))
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors)
        self.watchdog = _Watchdog(self.process, host.timeout_s)  # kills it when it stalls

    def exchange(self, request: Any) -> tuple[int, Any]:
        import json

        head = {"method": request.method, "path": request.url.path,
                "headers": {key: value for key, value in request.headers.items()
                            if key.lower().startswith("x-") or key.lower() == "content-type"}}
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            self.watchdog.progress()
            stdin.write(json.dumps(head).encode() + b"\n")
            for chunk in request.stream:
                if chunk:
                    stdin.write(b"%d\n" % len(chunk) + chunk)
                    self.watchdog.progress()
            stdin.write(b"0\n")
            stdin.flush()
            line = stdout.readline()
            self.watchdog.stop()
            reply = json.loads(line)
            return int(reply["status"]), reply.get("body")
        except (OSError, ValueError, KeyError, TypeError):
            raise _Broken(self._reason()) from None

    def _reason(self) -> str:
        self.watchdog.stop()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.watchdog.fired:
            return "timed out"
        self.errors.seek(0)
        return failure_reason(self.process.returncode or 255,
                              self.errors.read().decode("utf-8", "replace"))

    def close(self) -> None:
        self.watchdog.stop()
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.errors.close()


class _Watchdog:
    """Kills a process that makes no progress for timeout_s (a hung host never hangs a push)."""

    def __init__(self, process: subprocess.Popen, timeout_s: float) -> None:
        self.process, self.timeout_s = process, timeout_s
        self.timer: threading.Timer | None = None
        self.fired = False

    def _expire(self) -> None:
        self.fired = True
        self.process.kill()

    def progress(self) -> None:
        self.stop()
        self.timer = threading.Timer(self.timeout_s, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
