"""`watch --gpu-replay FILE` with a file that is not recorded readings: one line naming the
reading and the field, exit 2, instead of an AttributeError from deep inside the sampler."""

from __future__ import annotations

import pytest

from tests.test_cli_boundary import assert_refused

BROKEN_READINGS = [
    ("[1, 2]", "reading 1: expected a JSON object"),
    ('{"readings": 5}', "expected a reading, a list of readings"),
    ('"text"', "expected a reading, a list of readings"),
    ('{"devices": [1]}', "reading 1: device 0: expected a JSON object"),
    ('{"devices": {"a": 1}}', "reading 1: devices: expected a list"),
    ('{"devices": [{"utilization_pct": "97"}]}', "device 0: utilization_pct must be a number"),
    ('{"devices": [{"memory_used_bytes": 1.5}]}', "memory_used_bytes must be a whole number"),
    ('{"devices": [{"processes": [{"name": "python3"}]}]}', "process: needs a pid"),
    ('{"status": "fine"}', "status must be one of"),
    ('{"devices": []}\n{broken', "line 2: not JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
]


@pytest.mark.parametrize("content, fragment", BROKEN_READINGS)
def test_broken_replay_files_are_one_line(cli, deck_home, tmp_path, content, fragment):
    path = tmp_path / "readings.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_refused(cli("watch", "--count", "1", "--local", "--gpu-replay", str(path)),
                   "cannot replay GPU readings", fragment)


def test_null_fields_and_a_missing_index_are_fine(cli, deck_home, tmp_path):
    path = tmp_path / "readings.json"
    path.write_text('{"devices": [{"index": null, "name": "GPU", "utilization_pct": null}]}')
    result = cli("watch", "--count", "1", "--local", "--json", "--gpu-replay", str(path))
    assert result.code == 0, result
    assert result.json["gpus"]["devices"][0]["index"] == 0
