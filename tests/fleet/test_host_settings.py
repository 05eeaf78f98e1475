"""deck.toml [[hosts]]: checked when the file is read (exit 2, one line), and the remote command
built only from quoted words. No sshd needed."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import BadInput
from engine.host_settings import HostSettings
from engine.remote.ssh import control_path, failure_reason, remote_command, ssh_argv


def config_with(tmp_path: Path, hosts: str) -> Path:
    path = tmp_path / "deck.toml"
    path.write_text(hosts)
    return path


@pytest.mark.parametrize("entry, complaint", [
    ('name = "a"\nssh = "-oProxyCommand=touch /tmp/x"', "must not start with '-'"),
    ('name = "a"\nssh = "host -p 22"', "no spaces"),
    ('name = "../a"\nssh = "h"', "letters, digits"),
    ('name = "a"\nssh = ""', "at least 1 character"),
    ('name = "a"\nssh = "h"\nmodeldeck = "\'unclosed"', "not a command line"),
    ('name = "a"\nssh = "h"\nmodeldeck = ""', "empty"),
    ('name = "a"\nssh = "h"\nport = 22', "hosts.0.port"),
])
def test_bad_hosts_are_refused_when_deck_toml_is_read(tmp_path: Path, entry: str,
                                                      complaint: str) -> None:
    with pytest.raises(BadInput, match="hosts.0") as refused:
        load_config(config_with(tmp_path, f"[[hosts]]\n{entry}\n"))
    assert complaint in str(refused.value)


def test_host_names_are_unique(tmp_path: Path) -> None:
    hosts = '[[hosts]]\nname = "a"\nssh = "h1"\n[[hosts]]\nname = "a"\nssh = "h2"\n'
    with pytest.raises(BadInput, match="duplicate host name 'a'"):
        load_config(config_with(tmp_path, hosts))


def test_cli_exits_2_on_an_option_as_destination(tmp_path: Path, monkeypatch) -> None:
    import subprocess

    from tests.fleet.conftest import REPO

    config = config_with(tmp_path, '[[hosts]]\nname = "a"\nssh = "-oProxyCommand=x"\n')
    done = subprocess.run([str(REPO / ".venv/bin/modeldeck"), "--config", str(config), "fleet",
                           "status"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "MODELDECK_HOME": str(tmp_path / "home")})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "must not start with '-'" in done.stderr


def test_the_remote_command_is_quoted_word_by_word() -> None:
    host = HostSettings(name="a", ssh="ops@a", modeldeck="PYTHONPATH=/opt/x /opt/x/bin/modeldeck",
                        home="/srv/deck $(touch /tmp/pwned); rm -rf ~")
    command = remote_command(host, ["status", "--json"])
    # What the remote shell will split it into: the same words, nothing run.
    assert shlex.split(command) == ["env", "MODELDECK_HOME=/srv/deck $(touch /tmp/pwned); rm -rf ~",
                                    "PYTHONPATH=/opt/x", "/opt/x/bin/modeldeck", "status", "--json"]
    argv = ssh_argv(Path("/r"), host, command)
    assert argv[argv.index("--") + 1] == "ops@a"  # the destination comes after `--`
    assert "BatchMode=yes" in argv and "ControlMaster=auto" in argv


def test_control_sockets_fit_a_unix_socket_name(tmp_path: Path) -> None:
    host = HostSettings(name="a", ssh="h")
    deep = tmp_path / ("d" * 120) / "run"
    path = control_path(deep, host)
    try:
        assert len(str(path)) + 17 < 108  # ssh adds a suffix while it creates it
        assert (path.parent.stat().st_mode & 0o777) == 0o700
    finally:
        shutil.rmtree(path.parent)


@pytest.mark.parametrize("stderr, reason", [
    ("ssh: connect to host 10.0.0.1 port 22: Connection refused\r\n", "connection refused"),
    ("root@127.0.0.1: Permission denied (publickey).\r\n", "permission denied (publickey)"),
    ("ssh: connect to host 10.0.0.1 port 22: Connection timed out\r\n", "timed out"),
    ("ssh: Could not resolve hostname nope: Name or service not known\r\n",
     "could not resolve hostname"),
])
def test_ssh_failures_become_one_short_reason(stderr: str, reason: str) -> None:
    assert failure_reason(255, stderr) == reason


def test_a_failing_remote_command_says_so() -> None:
    assert failure_reason(127, "bash: line 1: modeldeck: command not found\n") == \
        "remote modeldeck failed (exit 127): bash: line 1: modeldeck: command not found"
    assert failure_reason(1, "modeldeck: error: tiny@1 on 'gpu': failed\n") == \
        "remote modeldeck failed (exit 1): tiny@1 on 'gpu': failed"
