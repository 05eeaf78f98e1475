"""Hypothesis fuzzing of every route that reads a body, against the real server on loopback.

Whatever a client sends, the answer comes within a bounded time, is never a 5xx, and an error
is OpenAI's JSON shape; afterwards the server still answers a normal request and no sequence is
left running. Bounded: about 300 requests in all, each with a 15 s limit.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.runstate import TOKEN_HEADER, read_control_token

REQUEST_TIMEOUT = 15.0
FUZZ = settings(deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# ---- values --------------------------------------------------------------------------------

EDGE_INTEGERS = st.sampled_from([0, 1, -1, 2, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -2**63 - 1,
                                 2**64, 10**30, 10**300])
EDGE_FLOATS = st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, 1e-300, 1e300, -1e300, 5e-324])
EDGE_TEXT = st.sampled_from(["", " ", "\ud800", "\udfff", "a\ud800b", "\x00", "tiny", "../x",
                             "\u202e", "\U0001f600", "x" * 5000, "Hello"])
LEAF = st.one_of(st.none(), st.booleans(), st.integers(), EDGE_INTEGERS,
                 st.floats(allow_nan=True, allow_infinity=True), EDGE_FLOATS,
                 st.text(max_size=40), EDGE_TEXT)
JSON = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)


def object_with(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Objects holding a random subset of the route's own fields (each plausible or random),
    plus sometimes a stray key: closer to what the route parses than random JSON is."""
    return st.fixed_dictionaries({}, optional={key: st.one_of(value, value, value, JSON)
                                               for key, value in fields.items()}).flatmap(
        lambda body: st.dictionaries(st.text(max_size=8), JSON, max_size=1).map(
            lambda extra: {**extra, **body}))


SAMPLING = {
    "model": st.just("tiny"),
    "max_tokens": st.integers(1, 4), "max_completion_tokens": st.integers(0, 4),
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "seed": EDGE_INTEGERS,
    "n": st.integers(0, 2), "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5)),
    "ignore_eos": st.booleans(), "presence_penalty": st.floats(-3, 3), "user": st.text(max_size=5),
}
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]),
                                 "content": st.one_of(st.text(max_size=30), EDGE_TEXT, JSON)})
BODIES = {
    "/v1/completions": object_with({**SAMPLING, "prompt": st.one_of(
        st.text(max_size=40), EDGE_TEXT, st.lists(st.integers(-5, 600), max_size=6))}),
    "/v1/chat/completions": object_with({**SAMPLING, "messages": st.lists(MESSAGE, max_size=3)}),
    "/control/deploy": object_with({"model": st.text(max_size=8).filter(lambda m: m != "tiny"),
                                    "version": st.integers()}),
    "/control/blobs/missing": object_with({"sha256": st.lists(st.text(max_size=70), max_size=3)}),
    "/control/versions": object_with({
        "model": st.text(max_size=8),
        "files": st.lists(st.fixed_dictionaries({"name": st.one_of(st.text(max_size=12), EDGE_TEXT),
                                                 "sha256": st.text("0123456789abcdef", min_size=64,
                                                                   max_size=64)}), max_size=3),
        "metadata": object_with({"weight_format": st.text(max_size=5), "kind": st.text(max_size=5),
                                 "param_count": st.integers(), "lineage": JSON})}),
    "/control/registry/deploy": object_with({"ref": st.text(max_size=10).filter(
        lambda r: "tiny" not in r), "reason": st.text(max_size=5), "force": st.booleans()}),
    "/control/registry/rollback": object_with({"to": st.text(max_size=10).filter(
        lambda r: "tiny" not in r), "reason": st.text(max_size=5)}),
}


def encoded(value: object) -> st.SearchStrategy[bytes]:
    return st.just(json.dumps(value).encode())  # NaN and Infinity come out as bare words


VALID = {"/v1/completions": {"model": "tiny", "prompt": "Hi", "max_tokens": 2},
         "/v1/chat/completions": {"model": "tiny", "max_tokens": 2,
                                  "messages": [{"role": "user", "content": "Hi"}]}}


def one_field_off(route: str) -> st.SearchStrategy[dict]:
    """A valid request with one field replaced: finds the single value that slips through."""
    return st.sampled_from(sorted(SAMPLING)).flatmap(lambda key: st.one_of(
        SAMPLING[key], JSON).map(lambda value: {**VALID[route], key: value}))


def body_for(route: str) -> st.SearchStrategy[bytes]:
    """Field-aware objects most of the time, then any JSON, then any bytes."""
    strategies = [BODIES[route].flatmap(encoded), BODIES[route].flatmap(encoded)]
    if route in VALID:
        strategies += [one_field_off(route).flatmap(encoded)] * 2
    return st.one_of(*strategies, JSON.flatmap(encoded), st.binary(max_size=64))


# ---- checks ---------------------------------------------------------------------------------

def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:400])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str) and "param" in error and "code" in error
        assert "Traceback" not in error["message"]
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line for line in response.text.splitlines() if line.startswith("data:")]
        assert events[-1] == "data: [DONE]", events[-3:]
    else:
        response.json()


def post(server, route: str, body: bytes, token: bool) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if token:
        headers[TOKEN_HEADER] = read_control_token(server.deck.paths)
    return httpx.post(f"{server.url}{route}", content=body, headers=headers,
                      timeout=REQUEST_TIMEOUT)


def settled(server, timeout: float = 20.0) -> None:
    """Nothing runs or waits any more; the metrics agree; a normal request is answered."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{server.url}/health", timeout=5).json()
        if (health["running"], health["waiting"]) == (0, 0):
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.05)
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    running = re.search(r'^modeldeck_num_requests_running\{[^}]*\} (\S+)$', metrics, re.M)
    assert running and float(running.group(1)) == 0
    answer = server.openai().completions.create(model="tiny", prompt="Hi", max_tokens=2)
    assert answer.choices[0].finish_reason in ("length", "stop")


# ---- the fuzzers ----------------------------------------------------------------------------

@pytest.mark.parametrize("route,examples", [("/v1/completions", 70),
                                            ("/v1/chat/completions", 70)])
def test_fuzz_openai_routes(shared_server, route, examples):
    @settings(FUZZ, max_examples=examples)
    @given(body=body_for(route))
    def run(body: bytes) -> None:
        check(post(shared_server, route, body, token=False))

    run()
    settled(shared_server)


CONTROL = ["/control/deploy", "/control/blobs/missing", "/control/versions",
           "/control/registry/deploy", "/control/registry/rollback"]


@pytest.mark.parametrize("route", CONTROL)
def test_fuzz_control_routes_with_the_token(shared_server, route):
    @settings(FUZZ, max_examples=20)
    @given(body=body_for(route))
    def run(body: bytes) -> None:
        check(post(shared_server, route, body, token=True))

    run()
    settled(shared_server)


NOT_AN_OBJECT = st.one_of(JSON.filter(lambda value: not isinstance(value, dict)).flatmap(encoded),
                          st.binary(max_size=32).map(lambda raw: b"\xff" + raw))


def test_fuzz_stop_with_the_token_never_stops_on_a_malformed_body(shared_server):
    """Only malformed bodies: a well-formed one would stop the shared server."""
    @settings(FUZZ, max_examples=20)
    @given(body=NOT_AN_OBJECT)
    def run(body: bytes) -> None:
        response = post(shared_server, "/control/stop", body, token=True)
        assert 400 <= response.status_code < 500
        check(response)

    run()
    settled(shared_server)


@pytest.mark.parametrize("route", [*CONTROL, "/control/stop"])
def test_fuzz_control_routes_without_the_token(shared_server, route):
    @settings(FUZZ, max_examples=8)
    @given(body=st.one_of(JSON.flatmap(encoded), st.binary(max_size=32)))
    def run(body: bytes) -> None:
        response = post(shared_server, route, body, token=False)
        assert response.status_code == 403
        check(response)

    run()


@given(sha=st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64),
                     st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
                             min_size=1, max_size=70)),
       headers=st.dictionaries(st.sampled_from(["x-upload-offset", "x-total-size"]),
                               st.one_of(st.integers(-3, 40).map(str), st.text(
                                   st.characters(codec="ascii", min_codepoint=32), max_size=25)),
                               max_size=2),
       body=st.binary(max_size=40), token=st.booleans())
@settings(FUZZ, max_examples=40)
def test_fuzz_blob_upload(shared_server, sha, headers, body, token):
    sent = {name: value for name, value in headers.items() if value.strip() == value}
    if token:
        sent[TOKEN_HEADER] = read_control_token(shared_server.deck.paths)
    response = httpx.put(f"{shared_server.url}/control/blobs/{sha}", content=body, headers=sent,
                         timeout=REQUEST_TIMEOUT)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code in (400, 403, 404, 405, 408, 413, 422):
        check(response)
    else:
        assert response.status_code in (200, 409)
        assert "stored" in response.json()
