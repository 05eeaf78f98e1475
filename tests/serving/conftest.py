"""Serving fixtures: a deck with two tiny versions, and the real server on a loopback port,
run in a thread of the test process (the same LocalServer `modeldeck serve` runs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class RunningServer:
    url: str
    deck: object
    server: object

    def openai(self, api_key: str = "unused", **kwargs):
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0,
                             timeout=60, **kwargs)


@pytest.fixture(scope="session")
def tiny_model_dir_distinct(tiny_model_dir_b: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model_dir_b with its final norm negated. Randomly initialised tiny models greedily
    repeat the prompt's last token, so two seeds answer alike; this one answers differently,
    which lets a test tell from the text alone which version produced a response."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir_b, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.neg_()
    destination = tmp_path_factory.mktemp("models-distinct") / "tiny-llama"
    model.save_pretrained(destination)
    AutoTokenizer.from_pretrained(tiny_model_dir_b).save_pretrained(destination)
    return destination


@pytest.fixture
def deck_toml() -> str:
    """The deck.toml the serving deck starts with; a test overrides it by parametrizing."""
    return ""


@pytest.fixture
def two_version_deck(deck, deck_home: Path, deck_toml: str, tiny_model_dir: Path,
                     tiny_model_dir_distinct: Path):
    """tiny@1 deployed to local, tiny@2 (different answers) imported and ready to deploy."""
    from engine import actions

    if deck_toml:
        deck_home.mkdir(parents=True, exist_ok=True)
        (deck_home / "deck.toml").write_text(deck_toml)

    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir_distinct, "tiny"))
    # Recorded as a deploy whose gate passed: with no server running, a deploy leaves the
    # version pending and the server's start would gate it (test_server_lifecycle tests that).
    deck.registry.move_pointer("local", deck.registry.resolve("tiny@1"), action="deploy",
                               reason="test", arguments={"ref": "tiny@1"})
    return deck


@pytest.fixture
def start_server(two_version_deck) -> Iterator[Callable[..., RunningServer]]:
    """Start the server in-process (port 0, fp32 so greedy outputs are reproducible)."""
    from engine.serving.process import ServeOptions
    from engine.targets.local import local_server

    started: list[tuple[object, object]] = []

    def start(**overrides) -> RunningServer:
        options = ServeOptions(**{"port": 0, "dtype": "float32", **overrides})
        server = local_server(two_version_deck, options)  # with the receiving routes
        server.load_deployed()
        thread = server.serve_in_thread()
        started.append((server, thread))
        return RunningServer(server.url, two_version_deck, server)

    yield start
    for server, thread in started:
        server.request_stop()
        thread.join(timeout=30)


@pytest.fixture
def running(start_server) -> RunningServer:
    return start_server()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
                  tiny_model_dir_distinct: Path) -> Iterator[RunningServer]:
    """One server for a whole module of requests that must not change its state (malformed
    bodies, fuzzing): starting a server per case would cost seconds each."""
    from engine import actions
    from engine.deck import Deck
    from engine.serving.process import ServeOptions
    from engine.targets.local import local_server

    home = tmp_path_factory.mktemp("shared-deck") / "deck"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELDECK_HOME", str(home))
        patch.delenv("MODELDECK_CONFIG", raising=False)
        deck = Deck.at(home)
        actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
        actions.import_model(deck, actions.ImportRequest(tiny_model_dir_distinct, "tiny"))
        actions.deploy(deck, actions.DeployRequest("tiny@1", reason="test"))
        server = local_server(deck, ServeOptions(port=0, dtype="float32"))
        server.load_deployed()
        thread = server.serve_in_thread()
        try:
            yield RunningServer(server.url, deck, server)
        finally:
            server.request_stop()
            thread.join(timeout=30)
            deck.close()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    """The tiny model and its tokenizer in fp32, for scheduler tests that drive it directly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def cpu_kernels():
    """modeldeck's CPU kernels (engine/serving/cpukernels.py), or a skip with the reason the
    server would report (no AVX512-BF16, no C compiler)."""
    from engine.serving import cpukernels

    loaded, reason = cpukernels.load()
    if loaded is None:
        pytest.skip(reason)
    return loaded
