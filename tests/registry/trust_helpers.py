"""Helpers shared by the registry's trust tests (test_trust.py, test_trust_home.py): a minimal
model directory built without torch, and the one-line error every refusal must be."""

from __future__ import annotations

import json
import struct
from pathlib import Path


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
