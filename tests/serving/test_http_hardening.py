"""The HTTP front end against hostile or broken clients: malformed bodies get 4xx in OpenAI's
error shape (never a 500, never a hang), a bad request never disturbs the others, slow or idle
connections are timed out, and blocking work stays off the event loop. Real server, loopback."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from engine.runstate import TOKEN_HEADER, read_control_token

REQUEST_TIMEOUT = 15.0  # no single answer may take longer (the tiny model answers in well under 1 s)


def raw(text: str) -> bytes:
    return text.encode()


def completion(**fields) -> bytes:
    return json.dumps({"model": "tiny", "prompt": "Hi", "max_tokens": 2, **fields}).encode()


def chat(**fields) -> bytes:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    return json.dumps({**body, **fields}).encode()


DEEP = b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}"
SHA = "ab" * 32

# (route, body, with the control token): every one must get a 4xx in OpenAI's shape.
ADVERSARIAL = [
    ("/v1/completions", completion(seed=18446744073709551616), False),
    ("/v1/completions", completion(seed=10**30), False),
    ("/v1/completions", completion(seed=-2**63 - 1), False),
    ("/v1/completions", completion(seed=1.5), False),
    ("/v1/completions", completion(seed=True), False),
    ("/v1/completions", completion(seed="7"), False),
    ("/v1/completions", completion(max_tokens=True), False),
    ("/v1/completions", completion(max_tokens=2.0), False),
    ("/v1/completions", completion(max_tokens=10**30), False),
    ("/v1/completions", raw('{"prompt": "Hi", "max_tokens": NaN}'), False),
    ("/v1/completions", raw('{"prompt": "Hi", "temperature": NaN}'), False),
    ("/v1/completions", raw('{"prompt": "Hi", "temperature": Infinity}'), False),
    ("/v1/completions", raw('{"prompt": "Hi", "top_p": 1e999}'), False),
    ("/v1/completions", completion(temperature=True), False),
    ("/v1/completions", completion(n=True), False),
    ("/v1/completions", completion(n=2), False),
    ("/v1/completions", raw('{"prompt": "Hi", "presence_penalty": NaN}'), False),
    ("/v1/completions", completion(frequency_penalty=9), False),
    ("/v1/completions", completion(stream=True, stream_options="include_usage"), False),
    ("/v1/completions", completion(stream=True, stream_options=["include_usage"]), False),
    ("/v1/completions", completion(stream=True, stream_options={"include_usage": "yes"}), False),
    ("/v1/completions", completion(stream="yes"), False),
    ("/v1/completions", raw('{"prompt": "\\ud800", "max_tokens": 2}'), False),
    ("/v1/completions", raw('{"prompt": ["\\udfff"], "max_tokens": 2}'), False),
    ("/v1/completions", completion(prompt=[1, -1]), False),
    ("/v1/completions", completion(prompt=[1, 10**30]), False),
    ("/v1/completions", completion(prompt=[1, True]), False),
    ("/v1/completions", completion(stop=[5]), False),
    ("/v1/completions", raw('{"prompt": "Hi", "stop": ["\\ud800"]}'), False),
    ("/v1/completions", completion(model=5), False),
    ("/v1/completions", DEEP, False),
    ("/v1/completions", b"[1, 2]", False),
    ("/v1/completions", b"null", False),
    ("/v1/completions", b"", False),
    ("/v1/completions", b"\xff\xfe{}", False),
    ("/v1/chat/completions", raw('{"messages": [{"role": "user", "content": "\\ud800"}]}'), False),
    ("/v1/chat/completions", raw('{"messages": [{"role": "\\udfff", "content": "Hi"}]}'), False),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), False),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": [{"type": "text",
                                                                           "text": 5}]}]), False),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": {"a": 1}}]), False),
    ("/v1/chat/completions", chat(messages=[{"role": "user"}]), False),
    ("/v1/chat/completions", chat(messages="Hi"), False),
    ("/v1/chat/completions", chat(seed=18446744073709551616), False),
    ("/v1/chat/completions", chat(stream=True, stream_options="x"), False),
    ("/v1/chat/completions", chat(max_completion_tokens=0), False),
    ("/v1/chat/completions", DEEP, False),
    ("/control/deploy", b"{}", True),
    ("/control/deploy", b"[]", True),
    ("/control/deploy", raw('{"model": "tiny", "version": 1e400}'), True),
    ("/control/deploy", raw('{"model": "tiny", "version": Infinity}'), True),
    ("/control/deploy", completion(), True),
    ("/control/deploy", json.dumps({"model": "tiny", "version": 10**30}).encode(), True),
    ("/control/deploy", json.dumps({"model": ["tiny"], "version": 1}).encode(), True),
    ("/control/deploy", raw('{"model": "\\ud800", "version": 1}'), True),
    ("/control/deploy", DEEP, True),
    ("/control/stop", b"not json", True),
    ("/control/stop", b"[1]", True),
    ("/control/stop", DEEP, True),
    ("/control/blobs/missing", b"[]", True),
    ("/control/blobs/missing", b'{"sha256": 5}', True),
    ("/control/blobs/missing", b'{"sha256": [5, null]}', True),
    ("/control/blobs/missing", b'{"sha256": "abc"}', True),
    ("/control/blobs/missing", DEEP, True),
    ("/control/versions", b"[]", True),
    ("/control/versions", json.dumps({"model": "x", "files": [{"name": "../../etc/passwd",
                                                                "sha256": SHA}],
                                      "metadata": {}}).encode(), True),
    ("/control/versions", json.dumps({"model": "x", "files": [{"name": "/etc/passwd",
                                                                "sha256": SHA}],
                                      "metadata": {"kind": "model"}}).encode(), True),
    ("/control/versions", json.dumps({"model": "x", "files": [], "metadata": []}).encode(), True),
    ("/control/versions", json.dumps({"model": "x", "files": [5], "metadata": {}}).encode(), True),
    ("/control/versions", json.dumps({"model": "x", "files": "abc", "metadata": {}}).encode(), True),
    ("/control/versions", json.dumps({"model": 5, "files": [], "metadata": {}}).encode(), True),
    ("/control/registry/deploy", b"[]", True),
    ("/control/registry/deploy", b'{"ref": 5}', True),
    ("/control/registry/deploy", b'{"ref": "tiny@1", "force": "yes"}', True),
    ("/control/registry/deploy", b'{"ref": "tiny@99999999999999999999999"}', True),
    ("/control/registry/rollback", b"[]", True),
    ("/control/registry/rollback", b'{"to": 5}', True),
    ("/control/registry/rollback", b'{"reason": ["x"]}', True),
    ("/v1/no-such-route", completion(), False),
]


def assert_openai_error(response: httpx.Response, low: int = 400, high: int = 499) -> None:
    assert low <= response.status_code <= high, (response.status_code, response.text[:300])
    body = response.json()
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert "param" in error and "code" in error
    assert "Traceback" not in error["message"]


def control_headers(running) -> dict[str, str]:
    return {TOKEN_HEADER: read_control_token(running.deck.paths)}


def wait_idle(url: str, timeout: float = 20.0) -> dict:
    """/health once nothing runs or waits (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{url}/health", timeout=5).json()
        if (health["running"], health["waiting"]) == (0, 0) or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


@pytest.mark.parametrize("route,body,token", ADVERSARIAL,
                         ids=[f"{i}:{r}" for i, (r, _, _) in enumerate(ADVERSARIAL)])
def test_malformed_bodies_get_openai_shaped_4xx(shared_server, route, body, token):
    headers = {"content-type": "application/json"}
    if token:
        headers.update(control_headers(shared_server))
    response = httpx.post(f"{shared_server.url}{route}", content=body, headers=headers,
                          timeout=REQUEST_TIMEOUT)
    assert_openai_error(response)
    # Nothing keeps generating for a request that got an error.
    assert wait_idle(shared_server.url) == {"status": "ok", "version": "tiny@1", "running": 0,
                                            "waiting": 0}


def test_control_routes_without_the_token_get_403_in_openai_shape(shared_server):
    running = shared_server
    for route in ("/control/deploy", "/control/stop", "/control/blobs/missing", "/control/versions",
                  "/control/registry/deploy", "/control/registry/rollback"):
        assert_openai_error(httpx.post(f"{running.url}{route}", content=b"{}", timeout=10), 403, 403)
    assert_openai_error(httpx.put(f"{running.url}/control/blobs/{SHA}", content=b"x", timeout=10),
                        403, 403)


@pytest.mark.parametrize("headers", [
    {"x-upload-offset": "abc", "x-total-size": "1"},
    {"x-upload-offset": "0"},
    {"x-upload-offset": "-1", "x-total-size": "1"},
    {"x-upload-offset": "\u0663", "x-total-size": "1"},
    {"x-upload-offset": "0", "x-total-size": "99999999999999999999999999"},
])
def test_upload_with_bad_headers_gets_400(shared_server, headers):
    running = shared_server
    sent = {k: v.encode() if not v.isascii() else v for k, v in headers.items()}
    response = httpx.put(f"{running.url}/control/blobs/{SHA}", content=b"x",
                         headers={**control_headers(running), **sent}, timeout=REQUEST_TIMEOUT)
    assert_openai_error(response)


def test_upload_of_a_bad_sha_gets_400_and_a_good_one_still_stores(shared_server):
    running = shared_server
    headers = control_headers(running)
    response = httpx.put(f"{running.url}/control/blobs/not-a-sha", content=b"x",
                         headers={**headers, "x-upload-offset": "0", "x-total-size": "1"})
    assert_openai_error(response)
    import hashlib

    data = b"hello blob"
    sha = hashlib.sha256(data).hexdigest()
    stored = httpx.put(f"{running.url}/control/blobs/{sha}", content=data,
                       headers={**headers, "x-upload-offset": "0",
                                "x-total-size": str(len(data))})
    assert stored.status_code == 200 and stored.json()["stored"] is True
    assert running.deck.registry.blobs.has(sha)


def test_a_bad_seed_fails_alone_and_the_server_still_stops_quickly(start_server):
    """Reproduced: seed=2**64 failed every request in flight with 500 and left the server
    unable to stop within 30 s. Now it is a 400 and the stream beside it finishes."""
    before = set(threading.enumerate())
    server = start_server()
    client = server.openai()
    with client.completions.with_streaming_response.create(
            model="tiny", prompt="The cat", max_tokens=60, temperature=0, stream=True,
            extra_body={"ignore_eos": True}) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))  # decoding now
        for seed in (18446744073709551616, 10**30, -2**63 - 1):
            bad = httpx.post(f"{server.url}/v1/completions", timeout=REQUEST_TIMEOUT,
                             json={"prompt": "Hi", "max_tokens": 4, "temperature": 1, "seed": seed})
            assert_openai_error(bad, 400, 400)
            assert "seed" in bad.json()["error"]["message"]
        rest = [line for line in lines if line.startswith("data:")]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][5:])["choices"][0]["finish_reason"] == "length"
    assert wait_idle(server.url)["running"] == 0
    server.server.request_stop()
    threads = [t for t in threading.enumerate()
               if t.name == "modeldeck-server" and t not in before]
    for thread in threads:
        thread.join(10)  # graceful shutdown has nothing left to wait for
    assert threads and not any(thread.is_alive() for thread in threads)


def test_a_stream_with_bad_options_is_refused_before_generating(running):  # own metrics
    """Reproduced: stream_options as a string gave a plain-text 500 while the request kept
    generating 400 tokens in the background."""
    response = httpx.post(f"{running.url}/v1/completions", timeout=REQUEST_TIMEOUT, json={
        "prompt": "The cat", "max_tokens": 400, "ignore_eos": True, "stream": True,
        "stream_options": "include_usage"})
    assert_openai_error(response, 400, 400)
    assert httpx.get(f"{running.url}/health").json()["running"] == 0
    metrics = httpx.get(f"{running.url}/metrics").text
    assert 'outcome="length"' not in metrics and 'outcome="cancelled"' not in metrics


# ---- slow and idle connections ---------------------------------------------------------------

SLOW = "[serve]\nread_timeout_s = 1.0\nbody_timeout_s = 3.0\nmax_connections = 80\n"


def open_socket(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_all(sock: socket.socket, limit_s: float) -> bytes:
    """Everything the server sends until it closes the connection (or limit_s passes)."""
    sock.settimeout(limit_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, socket.timeout):
        received += b"<still open>"
    except ConnectionResetError:
        received += b"<reset>"
    return received


@pytest.mark.parametrize("deck_toml", [SLOW])
def test_bodies_that_never_come_get_408_and_the_connection_closes(start_server):
    """Reproduced: 200 connections declaring a body and sending none stayed open forever."""
    server = start_server()
    sockets = []
    for _ in range(50):
        sock = open_socket(server.url)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 500\r\n\r\n{\"prompt\": ")
        sockets.append(sock)
    started = time.monotonic()
    # A normal request is served meanwhile.
    answer = server.openai().completions.create(model="tiny", prompt="Hi", max_tokens=2)
    assert answer.choices[0].finish_reason == "length"
    answers = [read_all(sock, 10) for sock in sockets]
    for sock in sockets:
        sock.close()
    assert time.monotonic() - started < 10
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"<still open>" not in answer
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["type"] == "timeout"


@pytest.mark.parametrize("deck_toml", [SLOW])
def test_a_trickled_body_hits_the_total_deadline(start_server):
    """One byte a half-second keeps each read under read_timeout_s; body_timeout_s ends it."""
    server = start_server()
    sock = open_socket(server.url)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    started = time.monotonic()
    answer = b""
    sock.settimeout(0.5)
    while time.monotonic() - started < 10:
        try:
            sock.sendall(b" ")
            answer += sock.recv(65536)
            if answer:
                break
        except (TimeoutError, socket.timeout):
            continue
        except OSError:
            break
    answer += read_all(sock, 5)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 2.5 < time.monotonic() - started < 8


@pytest.mark.parametrize("deck_toml", [SLOW])
def test_silent_and_half_sent_headers_are_closed(start_server):
    server = start_server()
    silent = [open_socket(server.url) for _ in range(20)]
    partial = []
    for _ in range(20):
        sock = open_socket(server.url)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
        partial.append(sock)
    started = time.monotonic()
    outcomes = [read_all(sock, 8) for sock in silent + partial]
    for sock in silent + partial:
        sock.close()
    assert all(b"<still open>" not in outcome for outcome in outcomes), outcomes[:3]
    assert time.monotonic() - started < 8
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize("deck_toml", [SLOW])
def test_connections_over_the_cap_are_refused_and_the_server_recovers(start_server):
    server = start_server()
    held = [open_socket(server.url) for _ in range(80)]
    time.sleep(0.3)  # let the server accept them all
    extra = open_socket(server.url)
    refused = read_all(extra, 5)
    extra.close()
    assert b"<still open>" not in refused
    if refused.startswith(b"HTTP/1.1"):
        assert refused.startswith(b"HTTP/1.1 503")
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 10
    while True:  # the held sockets are gone: the server serves again
        try:
            if httpx.get(f"{server.url}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_uvicorn_is_configured_from_the_serve_settings():
    from engine.config import ServeSettings
    from engine.serving.http import uvicorn_config

    settings = ServeSettings(read_timeout_s=2.5, max_connections=33, max_body_bytes=4096)
    config = uvicorn_config(lambda *a: None, settings)
    config.load()
    protocol = config.http_protocol_class
    assert protocol.header_timeout_s == 2.5 and protocol.max_connections == 33
    assert config.timeout_keep_alive <= 5
    assert config.timeout_graceful_shutdown == 30


# ---- blocking work off the event loop --------------------------------------------------------

def test_health_answers_while_a_huge_prompt_is_tokenized(running):
    """A prompt near the body limit takes the tokenizer a while; /health must not wait for it.
    Structural check (timing on a shared 2-core machine is unreliable): the tokenizer runs in
    a thread other than the event loop's."""
    served = running.server.host.active
    tokenizer = served.loaded.tokenizer
    seen: list[str] = []
    gate = threading.Event()
    original = type(tokenizer).__call__

    def spy(self, *args, **kwargs):
        seen.append(threading.current_thread().name)
        if len(str(args[0] if args else "")) > 100_000:
            gate.wait(10)  # hold the tokenization while /health is asked
        return original(self, *args, **kwargs)

    type(tokenizer).__call__ = spy
    try:
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(response=httpx.post(
            f"{running.url}/v1/completions", timeout=30,
            json={"prompt": "word " * 150_000, "max_tokens": 2})))
        worker.start()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        health = httpx.get(f"{running.url}/health", timeout=3)  # answered while tokenizing
        assert health.status_code == 200
        gate.set()
        worker.join(30)
    finally:
        type(tokenizer).__call__ = original
        gate.set()
    assert seen and "modeldeck-server" not in seen[0] and seen[0] != "MainThread"
    assert result["response"].status_code == 400  # over the tiny model's context
