"""The registry trusts nothing from outside: pushed file names, references, job ids, odd files in
an imported directory. Each case gets one line and an exit code, and the registry stays as it
was. The deck home itself (a file, unreadable, read-only, full): test_trust_home.py."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ActionFailed, BadInput
from engine.paths import deck_paths
from engine.registry import ModelRef, Registry
from engine.registry.inspect import SourceDescription
from tests.conftest import run_modeldeck
from tests.registry.test_crash_safety import kill_when_paused, start_paused
from tests.registry.trust_helpers import assert_one_line, make_model


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
