"""`modeldeck fleet receive`, the host's side of a push over ssh, fed in-process: several
requests in one session, a refused upload's body skipped so the next request still parses, and
a resumed upload that lands in the content-addressed store."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from engine.actions.fleet import receive
from engine.errors import BadInput


def request(method: str, path: str, body: bytes, headers: dict[str, str] | None = None,
            frame: int = 2) -> bytes:
    head = json.dumps({"method": method, "path": path, "headers": headers or {}}).encode() + b"\n"
    frames = b"".join(b"%d\n" % len(body[i:i + frame]) + body[i:i + frame]
                      for i in range(0, len(body), frame))
    return head + frames + b"0\n"


def answers(deck, *requests: bytes) -> list[dict]:
    out = io.BytesIO()
    receive(deck, io.BytesIO(b"".join(requests)), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_session_serves_a_refused_then_a_resumed_upload(deck) -> None:
    blob = b"weights!"
    sha = hashlib.sha256(blob).hexdigest()
    put = "/control/blobs/" + sha
    replies = answers(
        deck,
        request("PUT", put, blob[:3], {"x-upload-offset": "0", "x-total-size": "8"}),
        # Wrong offset: refused before its body is read; the session must skip that body.
        request("PUT", put, blob, {"x-upload-offset": "5", "x-total-size": "8"}),
        request("PUT", put, blob[3:], {"x-upload-offset": "3", "x-total-size": "8"}),
        request("POST", "/control/blobs/missing", json.dumps({"sha256": [sha]}).encode(),
                {"content-type": "application/json"}))
    assert [reply["status"] for reply in replies] == [409, 409, 200, 200]
    assert replies[0]["body"]["offset"] == 3 and replies[1]["body"]["offset"] == 3
    assert replies[3]["body"] == {"missing": [], "partial": {}}
    assert deck.registry.blobs.verify(sha)


@pytest.mark.parametrize("stdin, complaint", [
    (b"not json\n", "JSON head"),
    (json.dumps({"method": "POST", "path": "/control/registry/deploy", "headers": {}}).encode()
     + b"\n0\n", "transfer route"),
])
def test_malformed_sessions_are_bad_input(deck, stdin: bytes, complaint: str) -> None:
    with pytest.raises(BadInput, match=complaint):
        receive(deck, io.BytesIO(stdin), io.BytesIO())


def test_a_body_cut_short_is_answered_400_and_ends_the_session(deck) -> None:
    head = json.dumps({"method": "POST", "path": "/control/versions", "headers": {}}).encode()
    replies = answers(deck, head + b"\n99\nshort")
    assert replies[0]["status"] == 400 and "ended early" in replies[0]["body"]["error"]["message"]
