"""engine.fsutil.write_atomically under threads of one process: the rollout controller's thread
and a request handler both rewrite run/rollout.json, and a shared temporary name made one of
them fail (the controller then ended the rollout as "failed" while it was paused)."""

from __future__ import annotations

import threading

from engine.fsutil import write_atomically

THREADS = 4
WRITES_PER_THREAD = 300


def test_threads_of_one_process_rewrite_one_file_without_failing(tmp_path):
    target = tmp_path / "state.json"
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def rewrite(name: int) -> None:
        start.wait()
        for count in range(WRITES_PER_THREAD):
            try:
                write_atomically(target, f"writer {name} write {count}\n" * 50)
            except OSError as error:
                failures.append(error)

    workers = [threading.Thread(target=rewrite, args=(name,)) for name in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1, "one writer's whole text, not a mix of two"
    assert [path.name for path in tmp_path.iterdir()] == ["state.json"], "no temporary left"


def test_a_rewritten_file_keeps_its_mode_and_a_new_one_is_readable(tmp_path):
    private = tmp_path / "deck.toml"
    private.write_text("a = 1\n")
    private.chmod(0o600)
    write_atomically(private, "a = 2\n")
    assert (private.read_text(), private.stat().st_mode & 0o777) == ("a = 2\n", 0o600)
    fresh = tmp_path / "new.json"
    write_atomically(fresh, "{}")
    assert fresh.stat().st_mode & 0o777 == 0o644
