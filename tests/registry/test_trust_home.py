"""The registry trusts no deck home: one that is a file, unreadable, on a read-only mount or on a
full disk. Each case gets one line and an exit code, reads keep working where they can, and the
registry stays as it was (real mounts; skipped where mount is not permitted)."""

from __future__ import annotations

import ctypes
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_modeldeck
from tests.registry.trust_helpers import assert_one_line, make_model


# ---- 6. a deck home that is a file or unreadable ----------------------------------------------


@pytest.mark.parametrize("verb", [("status",), ("models", "list"), ("history",),
                                  ("models", "import", "X", "--name", "x")])
def test_a_home_that_is_a_file_is_one_line_exit_2(tmp_path, verb):
    home = tmp_path / "home-file"
    home.write_text("not a directory")
    args = [str(make_model(tmp_path / "m")) if part == "X" else part for part in verb]
    assert_one_line(run_modeldeck(*args, home=home), 2, "not a directory")


def _without_root_file_powers() -> None:
    """Drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set before exec, so
    this root-run test's child obeys file modes like any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize("verb", [("status",), ("models", "list")])
def test_an_unreadable_home_is_one_line_exit_2(tmp_path, verb):
    home = tmp_path / "locked"
    home.mkdir()
    home.chmod(0)
    env = {**os.environ, "MODELDECK_HOME": str(home)}
    try:
        completed = subprocess.run([sys.executable, "-m", "console.cli", *verb], cwd=REPO, env=env,
                                   capture_output=True, text=True, timeout=60,
                                   preexec_fn=_without_root_file_powers)
    except subprocess.SubprocessError as error:
        pytest.skip(f"cannot drop root's file capabilities here: {error}")
    finally:
        home.chmod(0o700)
    from tests.conftest import CliResult

    assert_one_line(CliResult(completed.returncode, completed.stdout, completed.stderr), 2,
                    "not readable")


# ---- 7 and 8. read-only and full disks (real mounts) -------------------------------------------


def _mount(*args: str) -> None:
    completed = subprocess.run(["mount", *args], capture_output=True, text=True)
    if completed.returncode != 0:
        pytest.skip(f"mount not permitted here ({completed.stderr.strip() or completed.returncode})")


@pytest.fixture
def mounts():
    mounted: list[Path] = []

    def mount(*args: str) -> None:
        _mount(*args)
        mounted.append(Path(args[-1]))

    yield mount
    for point in dict.fromkeys(reversed(mounted)):  # a remount names its point again
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)  # never leak one


@pytest.fixture
def read_only_home(tmp_path, mounts, cli, monkeypatch, tiny_source):
    """A deck with two versions, a deployment and an alias, seen through a read-only bind."""
    writable = tmp_path / "deck"  # the deck_home the cli fixture points at
    assert cli("models", "import", str(tiny_source), "--name", "tiny").code == 0
    assert cli("models", "import", str(tiny_source), "--name", "tiny").code == 0
    assert cli("deploy", "tiny@1", "--yes").code == 0
    assert cli("models", "alias", "tiny@1", "prod").code == 0
    view = tmp_path / "ro-view"
    view.mkdir()
    mounts("--bind", str(writable), str(view))
    mounts("-o", "remount,ro,bind", str(view))
    monkeypatch.setenv("MODELDECK_HOME", str(view))
    return view


@pytest.fixture
def tiny_source(tmp_path):
    return make_model(tmp_path / "tiny-src")


READ_VERBS = [("status",), ("models", "list"), ("models", "show", "tiny@prod"), ("history",),
              ("audit",), ("jobs", "list"), ("targets", "list")]


@pytest.mark.parametrize("verb", READ_VERBS)
def test_read_verbs_work_on_a_read_only_home(read_only_home, verb):
    result = run_modeldeck(*verb, "--json", home=read_only_home)
    assert result.code == 0, result
    assert "Traceback" not in result.stderr


def test_status_reports_the_deck_on_a_read_only_home(read_only_home, cli):
    report = cli("status", "--json").json
    assert (report["model_count"], report["version_count"]) == (1, 2)
    assert report["deployments"][0]["version"] == 1


@pytest.mark.parametrize("verb", [("deploy", "tiny@2", "--yes"), ("models", "alias", "tiny@2", "x"),
                                  ("models", "import", "SRC", "--name", "other"),
                                  ("rollback", "--to", "2", "--yes")])
def test_write_verbs_on_a_read_only_home_fail_in_one_line(read_only_home, cli, tiny_source, verb):
    args = [str(tiny_source) if part == "SRC" else part for part in verb]
    result = cli(*args)
    assert_one_line(result, 1)
    assert "read-only" in result.stderr.lower()


def test_an_empty_read_only_home_reads_as_an_empty_deck(tmp_path, mounts, cli, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    mounts("-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(empty))
    monkeypatch.setenv("MODELDECK_HOME", str(empty))
    assert cli("status", "--json").json["model_count"] == 0
    assert list(empty.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path, mounts, monkeypatch, deck_home):
    """A 4 MB tmpfs holding the deck home (set after deck_home's, so `cli` uses it too)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounts("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk))
    monkeypatch.setenv("MODELDECK_HOME", str(disk / "home"))
    return disk


def _fill(disk: Path, leave_bytes: int) -> Path:
    """Fill the disk, then give back `leave_bytes` (so SQLite can open but not write much)."""
    filler = disk / "filler"
    with open(filler, "wb") as sink:
        try:
            while True:
                sink.write(b"\0" * 65536)
                sink.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
    return filler


def _registry_intact(home: Path, refs: list[str]) -> None:
    listing = run_modeldeck("models", "list", "--json", home=home)
    assert listing.code == 0, listing
    assert [v["ref"] for v in listing.json["versions"]] == refs
    # immutable: a full disk cannot hold WAL's -shm; every writer has exited, nothing is in -wal
    connection = sqlite3.connect(f"file:{home / 'registry.db'}?immutable=1", uri=True)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


def test_a_full_disk_during_an_import_is_one_line_and_leaves_no_temp(small_disk, cli, tmp_path):
    home = small_disk / "home"
    assert cli("models", "import", str(make_model(tmp_path / "small")), "--name", "tiny").code == 0
    big = make_model(tmp_path / "big", os.urandom(5 << 20))  # more than the whole disk
    assert_one_line(cli("models", "import", str(big), "--name", "big"), 1,
                    "No space left on device", str(home / "blobs" / "tmp"))
    assert list((home / "blobs" / "tmp").iterdir()) == []
    _registry_intact(home, ["tiny@1"])


def test_database_or_disk_full_is_one_line_and_changes_nothing(small_disk, cli, tmp_path):
    home = small_disk / "home"
    assert cli("models", "import", str(make_model(tmp_path / "small")), "--name", "tiny").code == 0
    filler = _fill(small_disk, 2 << 10)  # less than the WAL pages one deploy writes
    result = run_modeldeck("deploy", "tiny@1", "--yes", home=home)
    assert_one_line(result, 1, "registry.db", "full")
    _registry_intact(home, ["tiny@1"])
    assert run_modeldeck("history", "--json", home=home).json["entries"] == []
    filler.unlink()
    assert run_modeldeck("deploy", "tiny@1", "--yes", home=home).code == 0


def test_a_completely_full_disk_still_reads_and_refuses_writes(small_disk, cli, tmp_path):
    home = small_disk / "home"
    assert cli("models", "import", str(make_model(tmp_path / "small")), "--name", "tiny").code == 0
    _fill(small_disk, 0)
    assert_one_line(run_modeldeck("models", "alias", "tiny@1", "prod", home=home), 1, "full")
    _registry_intact(home, ["tiny@1"])
    assert run_modeldeck("status", home=home).code == 0
