"""The OpenAI-compatible API, exercised with the official `openai` client against the real
server on loopback."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

VERSION_HEADER = "x-modeldeck-version"


def test_completion_names_its_version_and_counts_tokens(running):
    client = running.openai()
    raw = client.completions.with_raw_response.create(model="tiny", prompt="Once upon a time",
                                                      max_tokens=7, temperature=0)
    completion = raw.parse()
    assert raw.headers[VERSION_HEADER] == "tiny@1"
    assert completion.model == "tiny@1"
    assert completion.choices[0].finish_reason in ("length", "stop")
    assert completion.usage.completion_tokens == 7 or completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0
    assert [model.id for model in client.models.list().data] == ["tiny@1"]


def test_streaming_gives_the_same_text_as_a_plain_request(running):
    client = running.openai()
    messages = [{"role": "user", "content": "Tell me about the sea"}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12,
                                           temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=12,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert plain.choices[0].message.role == "assistant"
    assert streamed == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    text_stream = client.completions.create(model="tiny", prompt="The cat", max_tokens=5,
                                            temperature=0, stream=True)
    pieces = [chunk.choices[0] for chunk in text_stream]
    assert pieces[-1].finish_reason in ("length", "stop")


def test_stop_and_seed(running):
    client = running.openai()
    free = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=12,
                                     temperature=0).choices[0].text
    stop = free[4:6]
    stopped = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=12,
                                        temperature=0, stop=[stop]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free[:free.find(stop)]
    seeded = {client.completions.create(model="tiny", prompt="Hello", max_tokens=10, temperature=1,
                                        top_p=0.95, seed=11).choices[0].text for _ in range(2)}
    assert len(seeded) == 1


def test_bad_requests_get_openai_shaped_400s(running):
    client = running.openai()
    malformed = httpx.post(f"{running.url}/v1/completions", content=b'{"prompt": "x",',
                           headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="context is 512 tokens"):
        client.completions.create(model="tiny", prompt="word " * 2000, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny", prompt="Hi", max_tokens=10**7)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="Hi", temperature=9)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny", messages=[])
    too_big = httpx.post(f"{running.url}/v1/completions", content=b"x" * (2 << 20))
    assert too_big.status_code == 413
    assert httpx.get(f"{running.url}/health").json()["status"] == "ok"  # still serving


def test_full_queue_answers_429_and_a_dropped_stream_frees_its_slot(start_server):
    server = start_server(max_batch_size=1, max_queue=0)
    client = server.openai()
    with client.completions.with_streaming_response.create(
            model="tiny", prompt="The cat", max_tokens=400, temperature=0, stream=True) as hog:
        lines = hog.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))  # admitted, decoding
        with pytest.raises(openai.RateLimitError, match="server busy"):
            client.completions.create(model="tiny", prompt="Hello", max_tokens=2)
    # The client went away: its slot is freed (wait for the server to notice, bounded).
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/health").json()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    # ignore_eos: a sampled answer of the random tiny model may end on EOS within two tokens
    answer = client.completions.create(model="tiny", prompt="Hello", max_tokens=2,
                                       extra_body={"ignore_eos": True})
    assert answer.choices[0].finish_reason == "length"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'modeldeck_requests_total{outcome="cancelled",version="tiny@1"} 1.0' in metrics
    assert 'modeldeck_requests_total{outcome="rejected",version="tiny@1"} 1.0' in metrics


def test_api_key_guards_v1_only(start_server):
    server = start_server(api_key="s3cret-key")
    with pytest.raises(openai.AuthenticationError):
        server.openai(api_key="wrong").completions.create(model="tiny", prompt="Hi", max_tokens=2)
    good = server.openai(api_key="s3cret-key").completions.create(model="tiny", prompt="Hi",
                                                                  max_tokens=2)
    assert good.choices[0].text is not None
    assert httpx.get(f"{server.url}/health").status_code == 200
    control = httpx.post(f"{server.url}/control/stop", json={},
                         headers={"Authorization": "Bearer s3cret-key"})
    assert control.status_code == 403  # the API key is not the control token


def test_a_dropped_non_streamed_request_frees_its_slot(start_server):
    server = start_server(max_batch_size=1, max_queue=0)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up long before 500 tokens
        httpx.post(f"{server.url}/v1/completions", timeout=0.2, json={
            "model": "tiny", "prompt": "The cat", "max_tokens": 500, "temperature": 0,
            "ignore_eos": True})
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/health").json()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/health").json()["running"] == 0
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'modeldeck_requests_total{outcome="cancelled",version="tiny@1"} 1.0' in metrics
