"""The recording file: what `modeldeck record` writes is what replay reads (one snapshot shape),
rotation gzips old files that replay still reads, a line cut short by a crash is skipped, and
a file that is not a recording (or of an unknown schema version) is exit 2 with one line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from engine.actions.telemetry import open_recording
from engine.errors import BadInput
from engine.telemetry.recorder import (SCHEMA_KEY, RecordingWriter, parse_seek,
                                       recording_files)
from tests.telemetry.conftest import GPU_READINGS


def record(cli, path: Path, *extra: str) -> dict:
    result = cli("--json", "record", str(path), "--interval", "0.05", "--local",
                 "--gpu-replay", str(GPU_READINGS), *extra)
    assert result.code == 0, result
    return result.json


def test_what_record_writes_replays_as_the_same_snapshots(cli, deck_home, tmp_path):
    path = tmp_path / "flight.jsonl"
    summary = record(cli, path, "--count", "4")
    assert summary["frames"] == 4 and summary["rotated"] == []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line[SCHEMA_KEY] for line in lines] == [1, 1, 1, 1]
    assert "deck" in lines[0] and "deck" not in lines[1]  # a keyframe starts the file
    assert "utilization_history" not in lines[3]["telemetry"]["gpus"]["devices"][0]
    recording = open_recording(path)
    snapshot = recording.snapshot(3)
    written = lines[3]["telemetry"]
    assert snapshot.sequence == written["sequence"] and len(snapshot.gpus.devices) == 8
    device = snapshot.gpus.devices[4]
    assert device.utilization_pct == written["gpus"]["devices"][4]["utilization_pct"]
    # the history rebuilt from the lines before, as the sampler kept it
    assert device.utilization_history == tuple(
        line["telemetry"]["gpus"]["devices"][4]["utilization_pct"] for line in lines)
    # to_dict() of what is read back is what was written (histories aside)
    again = snapshot.to_dict()
    for gpu in again["gpus"]["devices"]:
        gpu.pop("utilization_history")
    again["host"].pop("cpu_history")
    assert json.loads(json.dumps(again)) == written


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_writer_starts_a_new_line(
        cli, deck_home, tmp_path):
    path = tmp_path / "flight.jsonl"
    record(cli, path, "--count", "3")
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[1][:57])  # died mid-line
    recording = open_recording(path)
    assert (len(recording), recording.torn) == (3, 1)
    record(cli, path, "--count", "2")  # appends after the torn line, on a line of its own
    recording = open_recording(path)
    assert (len(recording), recording.torn) == (5, 1)
    assert recording.times == sorted(recording.times)


def test_rotation_gzips_and_replay_reads_every_file(cli, deck_home, tmp_path):
    path = tmp_path / "flight.jsonl"
    record(cli, tmp_path / "one.jsonl", "--count", "1")
    line_bytes = (tmp_path / "one.jsonl").stat().st_size
    summary = record(cli, path, "--count", "9", "--max-bytes", str(int(line_bytes * 2.5)),
                     "--keep", "3")  # two lines a file: 2+2+2+2+1, the oldest two dropped
    assert [Path(name).name for name in summary["rotated"]] == ["flight.jsonl.1.gz"] * 4
    files = recording_files(path)
    assert [file.name for file in files] == ["flight.jsonl.3.gz", "flight.jsonl.2.gz",
                                             "flight.jsonl.1.gz", "flight.jsonl"]
    with gzip.open(files[0], "rb") as handle:
        first = json.loads(handle.readline())
    assert "deck" in first  # each file opens with a keyframe: it replays on its own
    recording = open_recording(path)
    assert len(recording) == 7 and recording.times == sorted(recording.times)
    assert recording.snapshot(0).sequence == 3  # lines 1-2 went with the dropped file
    assert len(open_recording(files[1])) == 2  # one .gz file on its own


@pytest.mark.parametrize("content, message", [
    (b'{"not": "a recording"}\n', "not a modeldeck recording"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a modeldeck recording"),
    (b'{"modeldeck_recording":7,"at":1,"telemetry":{}}\n', "schema version 7"),
])
def test_a_file_that_is_not_a_recording_is_exit_2_with_one_line(cli, deck_home, tmp_path,
                                                                   content, message):
    path = tmp_path / "other.jsonl"
    path.write_bytes(content)
    result = cli("tui", "--replay", str(path))
    assert result.code == 2 and message in result.stderr, result
    assert len(result.stderr.strip().splitlines()) == 1
    refused = cli("record", str(path), "--count", "1", "--local")  # never appended to
    assert refused.code == 2 and path.read_bytes() == content, refused


def test_an_empty_or_missing_recording_is_exit_2(cli, deck_home, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    for name in ("empty.jsonl", "missing.jsonl"):
        result = cli("tui", "--replay", str(tmp_path / name))
        assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1, result


def test_seek_texts(tmp_path):
    start, end = 1_767_225_600.0, 1_767_225_600.0 + 3600
    assert parse_seek("+90", start, end) == start + 90
    assert parse_seek("-60", start, end) == end - 60
    import time
    moment = parse_seek(time.strftime("%H:%M:%S", time.localtime(start + 75)), start, end)
    assert moment == start + 75
    with pytest.raises(BadInput):
        parse_seek("yesterday", start, end)


def test_writer_refuses_a_directory(tmp_path):
    with pytest.raises(BadInput):
        RecordingWriter(tmp_path)
