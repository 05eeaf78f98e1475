"""Client threads for load tests: start on entering the `with`, stop and join on leaving."""

from __future__ import annotations

import threading
from collections.abc import Callable


class ClientThreads:
    """`loop(index)` runs in each of `count` threads until `stopping` is set."""

    def __init__(self, loop: Callable[[int], None], count: int) -> None:
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=loop, args=(index,)) for index in range(count)]

    def __enter__(self) -> "ClientThreads":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
