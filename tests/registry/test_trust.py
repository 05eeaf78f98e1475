"""The registry trusts nothing from outside: pushed file names, references, job ids, odd files in
an imported directory, a deck home that is a file, unreadable, read-only or full. Each case
gets one line and an exit code, and the registry stays as it was."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.deck import Deck
from engine.errors import ActionFailed, BadInput
from engine.paths import deck_paths
from engine.registry import ModelRef, Registry
from engine.registry.inspect import SourceDescription
from tests.conftest import REPO, run_modeldeck
from tests.registry.test_crash_safety import kill_when_paused, start_paused


def make_model(directory: Path, payload: bytes = b"\0" * 8) -> Path:
    """A minimal valid safetensors directory (no torch needed): one U8 tensor and a config."""
    directory.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)],
                               "data_offsets": [0, len(payload)]}}).encode()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + payload)
    (directory / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return directory


def assert_one_line(result, code: int, *fragments: str) -> None:
    assert result.code == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modeldeck: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def registry(deck_home):
    opened = Registry(deck_paths(deck_home))
    yield opened
    opened.close()


@pytest.fixture
def two_models(cli, tmp_path):
    make_model(tmp_path / "a", b"a" * 8)
    make_model(tmp_path / "b", b"b" * 8)
    for source, name in (("a", "tiny"), ("b", "tiny"), ("a", "other")):
        assert cli("models", "import", str(tmp_path / source), "--name", name).code == 0
    assert cli("deploy", "tiny@2", "--yes").code == 0


# ---- 1. file names from outside never leave their directory ----------------------------------

ESCAPING_NAMES = ["../../../../x", "/abs/path/x", "a/../../x", "..", "sub/x", "a\x00b", ""]


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_register_refuses_escaping_file_names_and_writes_nothing(registry, tmp_path, name):
    source = make_model(tmp_path / "src") / "model.safetensors"
    description = SourceDescription(((name, source),), "safetensors", "model", None, None)
    with pytest.raises(BadInput, match="file name"):
        registry.register("pushed", description, produced_by="push", source=None)
    assert registry.versions() == []
    assert not list(registry.paths.blobs.rglob("*")), "a blob was stored for a refused version"


def test_pushed_version_with_escaping_name_is_refused_by_the_receiver(deck, tmp_path):
    """The route the receiver really calls: blobs present and verified, the name is the attack."""
    from engine.targets.receiver import register_pushed

    blob = make_model(tmp_path / "src") / "model.safetensors"
    sha256, _ = deck.registry.blobs.put(blob)
    victim = tmp_path / "victim"
    body = {"model": "pushed", "files": [{"name": f"../../../../../../..{victim}", "sha256": sha256}],
            "metadata": {"weight_format": "safetensors", "kind": "model"}}
    with pytest.raises(BadInput):
        register_pushed(deck, body)
    assert deck.registry.versions() == [] and not victim.exists()
    body["files"][0]["sha256"] = "../../../../etc/passwd"  # a digest is no path either
    with pytest.raises(BadInput, match="sha256"):
        register_pushed(deck, body)


@pytest.mark.parametrize("forged", ["../../../../../outside/victim", "/ABS/victim"])
def test_materialize_refuses_a_forged_row_and_writes_nothing_outside(registry, tmp_path, forged):
    version = registry.register("tiny", _describe(make_model(tmp_path / "src")),
                                produced_by="import", source=None)
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir()
    victim.write_text("keep me")
    name = forged.replace("/ABS", str(tmp_path / "outside"))
    with registry.db:
        registry.db.execute("UPDATE files SET name=? WHERE name='config.json'", (name,))
    with pytest.raises(ActionFailed, match="refusing to materialize"):
        registry.materialize(registry.resolve(version.ref))
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim"]
    assert not registry.paths.materialized.exists() or not any(registry.paths.materialized.rglob("*victim*"))


def test_link_into_never_writes_through_an_existing_file(registry, tmp_path):
    sha256, _ = registry.blobs.put(make_model(tmp_path / "src") / "config.json")
    existing = tmp_path / "existing"
    existing.write_text("keep me")
    with pytest.raises(FileExistsError):
        registry.blobs.link_into(sha256, existing)
    assert existing.read_text() == "keep me"


def _describe(directory: Path) -> SourceDescription:
    from engine.registry.inspect import describe_source

    return describe_source(directory)


# ---- 2. killed imports leave no temp files behind ---------------------------------------------


def test_next_import_removes_a_killed_writers_temp_but_not_a_live_ones(deck_home, tmp_path):
    make_model(tmp_path / "m1", b"1" * 64)
    make_model(tmp_path / "m2", b"2" * 64)
    make_model(tmp_path / "m3", b"3" * 64)
    temps = deck_home / "blobs" / "tmp"
    killed = start_paused(deck_home, "blobs:writing", tmp_path / "killed", "models", "import",
                          str(tmp_path / "m1"), "--name", "one")
    kill_when_paused(killed, tmp_path / "killed")
    left = sorted(temps.glob("incoming-*"))
    assert len(left) == 1, "the killed import should have left its partial temp"
    live = start_paused(deck_home, "blobs:writing", tmp_path / "live", "models", "import",
                        str(tmp_path / "m2"), "--name", "two")
    try:
        _wait_for(tmp_path / "live", live)
        live_temp = [p for p in temps.glob("incoming-*") if f"-{live.pid}-" in p.name]
        assert len(live_temp) == 1
        assert run_modeldeck("models", "import", str(tmp_path / "m3"), "--name", "three",
                             home=deck_home).code == 0
        assert sorted(temps.glob("incoming-*")) == live_temp, "stale temp kept or live temp removed"
    finally:
        live.kill()
        live.wait(timeout=10)


def test_a_temp_whose_lock_is_held_survives_even_when_its_pid_looks_gone(registry, tmp_path):
    """A writer in another pid namespace (a container sharing the home) holds the lock."""
    import fcntl

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    registry.paths.blob_tmp.mkdir(parents=True)
    temp = registry.paths.blob_tmp / f"incoming-{gone.pid}-{uuid.uuid4().hex}"
    with open(temp, "wb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert registry.blobs.sweep_stale_temps() == [] and temp.exists()
    assert registry.blobs.sweep_stale_temps() == [temp] and not temp.exists()


def _wait_for(marker: Path, process: subprocess.Popen) -> None:
    import time

    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)


# ---- 3. references, versions and job ids -------------------------------------------------------

BAD_REFERENCES = ["tiny@99999999999999999999999", "tiny@²", "tiny@٣", "tiny@0", "tiny@-1",
                  "tiny@", "tiny@a b", "../tiny", "tiny@9223372036854775808"]


@pytest.mark.parametrize("reference", BAD_REFERENCES)
def test_bad_references_are_one_line_exit_2(cli, two_models, reference):
    for verb in (("deploy", reference, "--yes"), ("models", "show", reference)):
        assert_one_line(cli(*verb), 2)
    assert cli("status", "--json").json["deployments"][0]["version"] == 2


def test_a_version_number_is_normalized(registry):
    assert ModelRef.parse("tiny@007") == ModelRef("tiny", "7")
    assert ModelRef.parse("tiny@latest").selector == "latest"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_any_reference_text_resolves_or_is_bad_input(registry, text):
    try:
        registry.resolve(text)
    except BadInput:
        pass


@pytest.mark.parametrize("job_id", ["a" * 300, "../x", ".hidden", "a/b", "", "x\x00"])
def test_job_ids_that_would_leave_jobs_are_bad_input(tmp_path, job_id):
    with pytest.raises(BadInput, match="invalid job id"):
        deck_paths(tmp_path).job(job_id)


@pytest.mark.parametrize("verb", ["show", "logs", "cancel", "resume"])
def test_jobs_verbs_refuse_an_id_that_cannot_be_a_job_in_one_line(cli, verb):
    """`jobs show <300 characters>` was an OSError traceback (file name too long)."""
    assert_one_line(cli("jobs", verb, "a" * 300), 2, "invalid job id")
    assert_one_line(cli("jobs", verb, "../../etc"), 2, "invalid job id")


def test_jobs_list_on_a_home_that_is_a_file_is_one_line(tmp_path):
    home = tmp_path / "home-file"
    home.write_text("not a directory")
    assert_one_line(run_modeldeck("jobs", "list", home=home), 2, "not a directory")


def test_a_real_job_id_is_a_directory_under_jobs(tmp_path):
    from engine.jobs import new_job_id

    job_id = new_job_id("finetune")
    assert deck_paths(tmp_path).job(job_id) == tmp_path / "jobs" / job_id


# ---- 4. rollback stays within the deployed model ---------------------------------------------


@pytest.mark.parametrize("to", ["other@1", "99999999999999999999999", "²", "0", "other@latest"])
def test_rollback_to_another_model_or_a_bad_number_is_refused(cli, two_models, to):
    assert_one_line(cli("rollback", "--to", to, "--yes"), 2)
    deployment = cli("status", "--json").json["deployments"][0]
    assert (deployment["model"], deployment["version"]) == ("tiny", 2)


def test_rollback_to_a_version_of_the_same_model_still_works(cli, two_models):
    assert cli("rollback", "--to", "tiny@1", "--yes").code == 0
    assert cli("status", "--json").json["deployments"][0]["version"] == 1


# ---- 5. odd files in an imported directory ---------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


def _device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers


@pytest.mark.parametrize("make, word", [(_fifo, "FIFO"), (_socket, "socket"),
                                        (_device, "character device")])
def test_a_directory_with_a_special_file_is_refused_without_hanging(deck_home, tmp_path, make, word):
    source = make_model(tmp_path / "model")
    try:
        make(source / "tokenizer.json")
    except PermissionError:
        pytest.skip(f"cannot create a {word} here")
    result = run_modeldeck("models", "import", str(source), "--name", "odd", home=deck_home,
                           timeout=60)
    assert_one_line(result, 2, word, "tokenizer.json")
    assert not (deck_home / "blobs" / "sha256").exists() or not any((deck_home / "blobs").rglob("*/*/*"))


def test_the_blob_store_never_opens_a_fifo_for_reading(registry, tmp_path):
    """A file swapped for a FIFO after it was inspected is still refused, not read."""
    fifo = tmp_path / "weights.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="FIFO"):
        registry.blobs.put(fifo)


def test_a_symlink_out_of_the_directory_is_refused(cli, tmp_path):
    source = make_model(tmp_path / "model")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not import me")
    (source / "tokenizer.json").symlink_to(secret)
    assert_one_line(cli("models", "import", str(source), "--name", "linked"), 2,
                    "symbolic link", "outside")
    (source / "tokenizer.json").unlink()
    (source / "generation_config.json").symlink_to("config.json")  # inside: fine
    assert cli("models", "import", str(source), "--name", "linked").code == 0


def test_a_hugging_face_cache_snapshot_imports_through_its_links(cli, tmp_path):
    """The hub cache keeps files in models--X/blobs and links them from snapshots/REV: a user
    imports the snapshot folder, so those links (and only those) are followed."""
    built = make_model(tmp_path / "built")
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot, blobs = repo / "snapshots" / "0123abcd", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for index, path in enumerate(sorted(built.iterdir())):
        (blobs / f"blob{index}").write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(f"../../blobs/blob{index}")
    result = cli("models", "import", str(snapshot), "--name", "cached", "--json")
    assert result.code == 0, result
    shown = cli("models", "show", "cached@1", "--json").json["model"]
    assert {entry["name"] for entry in shown["files"]} == {p.name for p in built.iterdir()}
    (tmp_path / "hub" / "elsewhere.txt").write_text("not this model's")
    (snapshot / "notes.txt").symlink_to("../../../elsewhere.txt")
    assert_one_line(cli("models", "import", str(snapshot), "--name", "cached2"), 2, "outside")


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
