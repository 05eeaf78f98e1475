"""The server's heap is frozen once a version is loaded (engine.serving.host.settle_heap), and
settling again collects what was dropped meanwhile, frozen or not."""

from __future__ import annotations

import gc
import weakref

from engine.serving.host import settle_heap


class Node:
    def __init__(self) -> None:
        self.partner: Node | None = None


def test_settling_freezes_the_heap_and_still_frees_a_dropped_cycle():
    try:
        first, second = Node(), Node()
        first.partner, second.partner = second, first  # a cycle: refcounts alone never free it
        watch = weakref.ref(first)
        settle_heap()
        assert gc.get_freeze_count() > 0
        # Frozen, a full collection does not see the cycle: dropping it leaves it alive...
        del first, second
        gc.collect()
        assert watch() is not None
        # ...until the next settle (a retire, a load) unfreezes and collects it.
        settle_heap()
        assert watch() is None
    finally:
        gc.unfreeze()


def test_a_loaded_version_freezes_the_heap_and_its_retirement_frees_the_model(tmp_path):
    from engine.config import ServeSettings
    from engine.demo import build_tiny_model
    from engine.paths import DeckPaths
    from engine.serving.host import ModelHost
    from engine.serving.metrics import ServerMetrics

    directory = build_tiny_model(tmp_path / "tiny")
    host = ModelHost(DeckPaths(tmp_path / "home").ensure(), ServeSettings(), ServerMetrics())
    try:
        gc.unfreeze()
        served = host.load_files("tiny@1", directory)
        assert gc.get_freeze_count() > 0  # the load settled the heap
        watch = weakref.ref(served.loaded.model)
        served.retire()
        del served
        assert watch() is None  # frozen with the heap, still freed when retired
    finally:
        gc.unfreeze()
