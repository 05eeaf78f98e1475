"""End to end: `modeldeck` in a real terminal (tmux), keys pressed with send-keys and the
screen read back with capture-pane. Deploys a version through the confirm dialog and quits."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from engine import actions
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (make system-deps installs it)")
WAIT_S = 60.0


class Tmux:
    def __init__(self) -> None:
        self.socket = f"modeldeck-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              check=check, timeout=30)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "deck").stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "deck", *keys)

    def wait_for(self, *texts: str) -> str:
        deadline = time.monotonic() + WAIT_S
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"never saw {texts} on screen:\n{screen}")

    def alive(self) -> bool:
        return self.run("has-session", "-t", "deck", check=False).returncode == 0

    def kill(self) -> None:
        self.run("kill-server", check=False)


def test_deploy_through_a_real_terminal(deck, tiny_model_dir, tiny_model_dir_b):
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir_b, "tiny"))
    actions.deploy(deck, actions.DeployRequest("tiny@1", "local"))
    command = (f"cd {shlex.quote(str(REPO))} && MODELDECK_HOME={shlex.quote(str(deck.paths.home))} "
               f"TERM=xterm-256color {shlex.quote(sys.executable)} -m console.cli; sleep 0.5")
    tmux = Tmux()
    try:
        tmux.run("new-session", "-d", "-s", "deck", "-x", "120", "-y", "40", command)
        tmux.wait_for("Models", "tiny@2", "local→tiny@1")
        tmux.keys("d")
        tmux.wait_for("Deploy tiny@2 to which target?")
        tmux.keys("Enter")
        tmux.wait_for("Deploy?", "local: tiny@1 -> tiny@2")
        tmux.keys("y")
        tmux.wait_for("local→tiny@2")
        assert deck.registry.deployment("local").ref == "tiny@2"
        tmux.keys("q")
        deadline = time.monotonic() + WAIT_S
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive(), "modeldeck did not quit on q"
    finally:
        tmux.kill()


def test_readonly_in_a_real_terminal_offers_no_actions(deck, tiny_model_dir):
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    command = (f"cd {shlex.quote(str(REPO))} && MODELDECK_HOME={shlex.quote(str(deck.paths.home))} "
               f"TERM=xterm-256color {shlex.quote(sys.executable)} -m console.cli tui --readonly")
    tmux = Tmux()
    try:
        tmux.run("new-session", "-d", "-s", "deck", "-x", "120", "-y", "40", command)
        screen = tmux.wait_for("tiny@1", "Quit")  # 80x24 or larger: the footer is the last line
        footer = screen.rstrip().splitlines()[-1]
        assert "Deploy" not in footer and "Rollback" not in footer, footer
        tmux.keys("d")
        tmux.keys("?")  # a key that does act: once its help shows, d has been handled
        screen = tmux.wait_for("modeldeck keys")
        assert "which target" not in screen
        assert deck.registry.deployment("local") is None
    finally:
        tmux.kill()


def test_at_80x24_the_header_and_the_help_and_quit_keys_are_on_screen(deck, tiny_model_dir):
    """Not read-only, so every action key competes for the footer's 80 cells."""
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    command = (f"cd {shlex.quote(str(REPO))} && MODELDECK_HOME={shlex.quote(str(deck.paths.home))} "
               f"TERM=xterm-256color {shlex.quote(sys.executable)} -m console.cli")
    tmux = Tmux()
    try:
        tmux.run("new-session", "-d", "-s", "deck", "-x", "80", "-y", "24", command)
        screen = tmux.wait_for("tiny@1", "Deploy", "? Help", "q Quit", "local stopped")
        lines = screen.rstrip("\n").splitlines()
        assert "? Help" in lines[-1] and "q Quit" in lines[-1], lines[-1]
        assert lines[0].lstrip().startswith("modeldeck") and "local stopped" in lines[0], lines[0]
        tmux.keys("r")  # nothing is deployed: a toast says why r does nothing
        tmux.wait_for("nothing is deployed")
    finally:
        tmux.kill()
