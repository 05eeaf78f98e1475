"""[slo] overrides: `[slo.models."NAME"]` and an endpoint's `slo = {...}`, resolved key by key
(endpoint, then model, then [slo]) and used for the endpoint's, the versions' and the models'
attainment."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import BadInput
from engine.remote.derive import Window
from engine.remote.metrics import Histogram
from engine.slo_settings import SloBounds, SloSettings
from engine.snapshots import EndpointSnapshot, ModelStats

INF = float("inf")
TEN = Histogram(((0.1, 2.0), (0.5, 7.0), (1.0, 9.0), (INF, 10.0)))  # 10 requests

DECK = """
[slo]
ttft_s = 0.5
itl_s = 0.1
[slo.models."smollm2"]
ttft_s = 1.0
[[endpoints]]
name = "edge"
kind = "vllm"
url = "http://127.0.0.1:1"
model = "smollm2"
slo = { ttft_s = 0.1, error_rate = 0.01 }
[[endpoints]]
name = "plain"
kind = "vllm"
url = "http://127.0.0.1:2"
model = "smollm2"
"""


def deck(tmp_path: Path, text: str = DECK):
    path = tmp_path / "deck.toml"
    path.write_text(text)
    return load_config(path)


def test_the_most_specific_level_wins_key_by_key(tmp_path: Path):
    config = deck(tmp_path)
    edge, plain = config.endpoints
    assert config.slo.resolve("smollm2", edge.slo) == SloBounds(ttft_s=0.1, itl_s=0.1,
                                                                 error_rate=0.01)
    assert config.slo.resolve("smollm2", plain.slo) == SloBounds(ttft_s=1.0, itl_s=0.1)
    assert config.slo.resolve("other") == SloBounds(ttft_s=0.5, itl_s=0.1)
    assert config.slo.resolve("smollm2", edge.slo) is config.slo.resolve("smollm2", edge.slo)
    assert SloSettings().resolve("smollm2") is None  # no [slo]: nothing is measured
    only_model = SloSettings(models={"smollm2": SloBounds(e2e_s=2.0)})
    assert only_model.any_configured and only_model.resolve("other") is None
    assert only_model.resolve("smollm2") == SloBounds(e2e_s=2.0)


@pytest.mark.parametrize("text, fragment", [
    ('[slo.models."m"]\nttft_s = -1\n', "slo.models.m.ttft_s"),
    ('[slo.models."m"]\nttft = 1\n', "slo.models.m.ttft"),
    ('[slo]\nwindow_s = 0\n', "slo.window_s"),
    ('[[endpoints]]\nname = "a"\nkind = "vllm"\nurl = "http://h"\nslo = { itl_s = 0 }\n',
     "endpoints.0.slo.itl_s")])
def test_bad_overrides_are_refused_naming_the_key(tmp_path: Path, text: str, fragment: str):
    with pytest.raises(BadInput) as refused:
        deck(tmp_path, text)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


def test_the_endpoint_and_its_versions_use_their_own_bounds():
    """A modeldeck server names its model in its versions: tiny@1 and tiny@2 resolve through
    [slo.models."tiny"]; the endpoint's own override wins over both."""
    from prometheus_client import generate_latest

    from engine.remote.metrics import parse_scrape
    from engine.serving.metrics import ServerMetrics
    from engine.telemetry.sampler import _with_window
    from tests.telemetry.served_requests import serve

    metrics = ServerMetrics()
    before = parse_scrape(generate_latest(metrics.registry).decode(), at=0.0)
    serve(metrics.observer("tiny@1"), 4, 0.2, 0.3)  # 0.2 s to the first token
    after = parse_scrape(generate_latest(metrics.registry).decode(), at=2.0)
    endpoint = EndpointSnapshot("local", "modeldeck", "http://127.0.0.1:1", "up", model="local")
    slo = SloSettings(ttft_s=0.1, models={"tiny": SloBounds(ttft_s=0.3)})

    measured = _with_window(endpoint, (0.0, before), (2.0, after), slo)
    assert measured.slo.ttft == 1.0 and measured.slo.ttft_bound_s == 0.3  # the model's bound
    assert measured.versions[0].slo.ttft == 1.0 and measured.versions[0].slo.ttft_bound_s == 0.3
    strict = _with_window(endpoint, (0.0, before), (2.0, after), slo, SloBounds(ttft_s=0.15))
    assert strict.slo.ttft == 0.0 and strict.slo.ttft_bound_s == 0.15
    assert strict.versions[0].slo.ttft == 0.0


def test_a_model_merges_its_replicas_buckets():
    """Two replicas of smollm2: 7 of 10 and 2 of 10 requests within 0.5 s -> 9 of 20."""
    from engine.telemetry.sampler import _models_slo

    fast = Window(10.0, 50.0, None, 1.0, None, None, None, {"ttft": TEN})
    slow = Window(10.0, 30.0, None, 1.0, None, None, None, {"ttft": Histogram(
        ((0.1, 0.0), (0.5, 2.0), (1.0, 9.0), (INF, 10.0)))})
    endpoints = [EndpointSnapshot(name, "vllm", "http://h", "up", model="smollm2")
                 for name in ("a", "b")]
    models = (ModelStats("smollm2", 2, 2),)
    (merged,) = _models_slo(models, endpoints, {"a": fast, "b": slow}, SloSettings(ttft_s=0.5))
    assert merged.slo.ttft == pytest.approx(9 / 20)
    assert merged.slo.goodput_tokens_per_s == pytest.approx(80.0 * 9 / 20)
    (untouched,) = _models_slo(models, endpoints, {"a": fast, "b": slow}, None)
    assert untouched.slo is None
