"""The fused step's GEMMs run on every core this process may use while the rest of the step stays
on the server's own thread count (bench/decode_step.py measured why)."""

from __future__ import annotations

import os

import pytest

from engine.serving.linears import FusedLinear
from engine.serving.modelstep import gemm_threads
from engine.serving.threads import UP_BACKOFF_MAX_SECONDS, GemmThreads

CORES = len(os.sched_getaffinity(0))
needs_two_cores = pytest.mark.skipif(CORES < 2, reason="one usable core: no spare core for GEMMs")


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_two_cores
def test_cpu_gemms_get_every_core_only_when_the_server_leaves_one_out(one_thread):
    import torch

    assert gemm_threads(torch.device("cpu")) == CORES
    torch.set_num_threads(CORES)
    assert gemm_threads(torch.device("cpu")) is None  # nothing spare to add
    assert gemm_threads(torch.device("cuda", 0)) is None  # cuBLAS: thread counts mean nothing


@needs_two_cores
def test_a_gemm_runs_on_its_threads_and_hands_back_the_servers_count(one_thread):
    import torch

    linear = torch.nn.Linear(64, 48, bias=True, dtype=torch.float32)
    fused = FusedLinear([linear], threads=GemmThreads(CORES))
    seen: list[int] = []
    multiply = fused._multiply

    def spy(hidden):
        seen.append(torch.get_num_threads())
        return multiply(hidden)

    fused._multiply = spy  # type: ignore[method-assign]
    hidden = torch.randn(5, 64)
    with torch.inference_mode():
        output = fused(hidden)
        torch.testing.assert_close(output, linear(hidden))
    assert seen == [CORES]
    assert torch.get_num_threads() == 1  # the rest of the step stays on the server's count
    torch.set_num_threads(CORES)  # another version stepping at the same moment raised it
    with torch.inference_mode():
        fused(hidden)
    assert torch.get_num_threads() == 1  # back to the count the step was built under


def test_without_threads_a_gemm_leaves_the_count_alone(one_thread):
    import torch

    linear = torch.nn.Linear(16, 8, bias=False)
    fused = FusedLinear([linear])
    with torch.inference_mode():
        torch.testing.assert_close(fused(torch.ones(2, 16)), linear(torch.ones(2, 16)))
    assert torch.get_num_threads() == 1


# --- the count measured while serving (engine.serving.threads) --------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(threads: GemmThreads, clock: FakeClock, seconds_per_step, steps: int,
          tokens: int = 8) -> list[int]:
    """Run `steps` steps whose time depends on the count they ran on; the counts used."""
    used = []
    for _ in range(steps):
        threads.begin_step(tokens)
        used.append(threads.active)
        clock.now += seconds_per_step(threads.active)
        threads.end_step()
    return used


def seconds_back_on_both_cores(threads: GemmThreads, clock: FakeClock,
                               seconds_per_step=None) -> float:
    """Quiet steps until two threads are chosen again (at most 20 s): how long that took."""
    left_at = clock.now
    while threads.chosen == 1 and clock.now - left_at < 20:
        drive(threads, clock, seconds_per_step or QUIET, 1)
    assert threads.chosen == 2
    return clock.now - left_at


def after_a_neighbour_left() -> tuple[FakeClock, GemmThreads]:
    """A neighbour moved the GEMMs to one thread, then left (the next look sees it gone)."""
    clock = FakeClock()
    elsewhere = [1.0]
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: elsewhere[0])
    drive(threads, clock, NEIGHBOUR, 10)
    assert threads.chosen == 1
    elsewhere[0] = 0.0
    return clock, threads


QUIET = {1: 0.015, 2: 0.010}.get  # both cores free: two threads 1.5x faster
NEIGHBOUR = {1: 0.016, 2: 1.2}.get  # a busy neighbour on one core: measured 16 ms vs 1.2 s


def test_a_quiet_box_keeps_every_core_with_few_cheap_trials():
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 0.0)
    used = drive(threads, clock, QUIET, 3000)
    assert threads.chosen == 2 and threads.switches == 0
    trials = used.count(1)
    assert 0 < trials <= clock.now / 0.5 + 1  # fewer threads tried every PROBE_SECONDS, no more


def test_a_busy_neighbour_moves_the_gemms_to_one_thread_within_a_few_steps():
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 1.0)
    used = drive(threads, clock, NEIGHBOUR, 10)
    assert threads.chosen == 1 and threads.switches == 1
    assert used[-1] == 1 and used.count(2) <= 4  # 3 steps to know the count, then trials
    later = drive(threads, clock, NEIGHBOUR, 5000)  # ~80 s: the busy core is never tried again
    assert later.count(2) == 0 and threads.chosen == 1


def test_the_cores_come_back_when_the_neighbour_leaves():
    clock, threads = after_a_neighbour_left()
    assert seconds_back_on_both_cores(threads, clock) <= 1.0


def test_losses_before_a_neighbour_leaves_do_not_delay_the_return():
    """Trials of two threads lost while the cores looked free (the neighbour not yet counted)
    back off; the neighbour then seen and seen gone ends that back-off."""
    clock = FakeClock()
    elsewhere: list[float | None] = [None]
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: elsewhere[0])
    drive(threads, clock, NEIGHBOUR, 2000)  # trials of 2 threads lost: waits up to the maximum
    assert threads.chosen == 1 and threads._up_wait == UP_BACKOFF_MAX_SECONDS
    while drive(threads, clock, NEIGHBOUR, 1) != [2]:  # until a trial just lost
        pass
    elsewhere[0] = 1.0
    drive(threads, clock, NEIGHBOUR, 50)  # 0.8 s seen busy
    elsewhere[0] = 0.0
    assert seconds_back_on_both_cores(threads, clock) <= 1.0


def test_without_a_cpu_reading_trials_of_more_threads_back_off():
    """Elsewhere than Linux nothing says the cores are busy: each lost trial doubles the wait,
    so a neighbour that stays costs one slow step every UP_BACKOFF_MAX_SECONDS at most."""
    from engine.serving import threads as module

    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: None)
    drive(threads, clock, NEIGHBOUR, 10)
    start = clock.now
    used = drive(threads, clock, NEIGHBOUR, 8000)  # ~130 s
    minutes = (clock.now - start) / 60
    assert threads.chosen == 1
    assert 0 < used.count(2) <= minutes * 60 / module.UP_BACKOFF_MAX_SECONDS + 4


def test_one_lucky_trial_does_not_switch():
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 0.0)
    lucky = [0]

    def once_fast(count: int) -> float:
        if count == 1 and not lucky[0]:
            lucky[0] = 1
            return 0.005  # one trial step on one thread happened to be fast
        return QUIET(count)

    drive(threads, clock, once_fast, 500)
    assert lucky[0] and threads.chosen == 2 and threads.switches == 0


def test_trials_compare_steps_of_the_same_size_only():
    """A trial of a 1-token step is not judged against the times of 64-token steps."""
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 0.0)
    for _ in range(200):  # a prefill-heavy burst, then plain decoding, and again
        for tokens, scale in ((64, 20.0), (1, 1.0)):
            for _ in range(6):
                threads.begin_step(tokens)
                clock.now += scale * QUIET(threads.active)
                threads.end_step()
    assert threads.chosen == 2 and threads.switches == 0


def test_other_processes_busy_cores_are_measured_and_our_own_are_not():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat (not Linux)")
    import subprocess
    import sys
    import time

    from engine.serving.threads import OthersCpu

    reading = OthersCpu()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # this process busy: not counted as elsewhere
        pass
    own = reading.cores()
    neighbour = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)
        reading.cores()
        time.sleep(1.0)
        elsewhere = reading.cores()
    finally:
        neighbour.kill()
        neighbour.wait()
    assert own is not None and elsewhere is not None
    assert elsewhere >= own + 0.5 and elsewhere >= 0.6


SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"


def test_a_neighbour_starting_mid_serving_costs_one_slow_step():
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 1.0)
    drive(threads, clock, QUIET, 200)
    assert threads.chosen == 2
    used = drive(threads, clock, NEIGHBOUR, 20)
    assert threads.chosen == 1 and used.count(2) == 1  # the slow step that showed it, no more


def test_a_single_hiccup_on_a_quiet_box_is_undone_within_a_second():
    """One step 3x slow (a page fault, a burst of HTTP work) may move the count to one thread;
    the trial of more threads half a second later moves it back."""
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 0.0)
    drive(threads, clock, QUIET, 200)
    drive(threads, clock, lambda count: 0.04, 1)  # the hiccup: 4x the median, 30 ms over it
    start = clock.now
    used = drive(threads, clock, QUIET, 300)
    assert threads.chosen == 2
    one_thread_seconds = used.count(1) * QUIET(1)
    assert one_thread_seconds <= 1.0 and clock.now - start >= 2.0


def test_a_first_token_never_waits_for_a_trial():
    """The step after an idle spell and prefill steps (a first token's wait) run on the chosen
    count; trials happen on decode steps of a busy server."""
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 0.0)
    drive(threads, clock, QUIET, 200)
    for _ in range(20):
        clock.now += 2.0  # idle: every trial is due by now
        threads.begin_step(8)
        assert threads.active == 2
        clock.now += QUIET(threads.active)
        threads.end_step()
    prefill_counts = []
    for _ in range(300):
        threads.begin_step(8, prefill=True)
        prefill_counts.append(threads.active)
        clock.now += QUIET(threads.active)
        threads.end_step()
    assert set(prefill_counts) == {2}
    assert 1 in drive(threads, clock, QUIET, 100)  # decode steps still host the trials


def test_a_neighbour_that_started_while_the_server_idled_costs_one_slow_step():
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 1.0)
    drive(threads, clock, QUIET, 200)
    clock.now += 5.0  # idle; the neighbour starts meanwhile
    used = drive(threads, clock, NEIGHBOUR, 20)
    assert threads.chosen == 1 and used.count(2) == 1


STREAMING = {1: 0.010, 2: 0.012}.get  # batch-1 decode beside this server's own streaming work


def streaming_on_one_thread() -> tuple[FakeClock, list[float], GemmThreads]:
    """A server whose decode steps chose one thread while the cores were free."""
    clock = FakeClock()
    elsewhere = [0.0]
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: elsewhere[0])
    drive(threads, clock, STREAMING, 400)
    assert threads.chosen == 1
    return clock, elsewhere, threads


def test_prefill_steps_run_on_every_core_while_the_cores_look_free():
    """Decode steps may choose one thread (the other core busy with this server's own
    streaming); a prefill multiplies many rows and runs on both cores while other processes
    leave them free, without moving the decode steps' choice."""
    clock, elsewhere, threads = streaming_on_one_thread()
    counts = []
    for _ in range(200):  # a prefill now and then between decode steps
        threads.begin_step(9, prefill=True)
        counts.append(threads.active)
        clock.now += 0.030 if threads.active == 1 else 0.022
        threads.end_step()
        drive(threads, clock, STREAMING, 5, tokens=1)
    assert set(counts) == {2} and threads.chosen == 1
    elsewhere[0] = 1.0  # a neighbour: seen at the next look, prefills stay on the chosen count
    drive(threads, clock, NEIGHBOUR, 60, tokens=1)
    threads.begin_step(9, prefill=True)
    assert threads.active == 1


def test_after_an_idle_spell_beside_a_busy_process_the_first_prefill_stays_on_the_chosen_count():
    clock, elsewhere, threads = streaming_on_one_thread()
    elsewhere[0] = 1.5  # the look after idle covers the spell: another server's turn
    clock.now += 6.0
    threads.begin_step(9, prefill=True)
    assert threads.active == 1
    clock.now += 0.03
    threads.end_step()
    elsewhere[0] = 0.0  # it stopped: once a look sees the cores free, prefills get both
    clock.now += 1.1  # idle again: the look is stale, the next prefill takes a new one
    threads.begin_step(9, prefill=True)
    assert threads.active == 2


def test_after_an_idle_spell_the_first_prefill_goes_by_what_runs_now_not_by_the_spell():
    """The look after idle covers the spell, which may have been another process's burst that
    is over (the bench's other server, stopped for this one's turn): if nothing else is
    runnable now, the first prefill gets every core; if something is, the chosen count."""
    clock, elsewhere, _ = streaming_on_one_thread()
    running = [0]
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: elsewhere[0],
                          running_elsewhere=lambda: running[0])
    drive(threads, clock, STREAMING, 400)
    assert threads.chosen == 1
    elsewhere[0] = 1.5  # the spell: the other server's turn
    for now_running, expected in ((0, 2), (1, 1)):
        running[0] = now_running
        clock.now += 6.0
        threads.begin_step(9, prefill=True)
        assert threads.active == expected, now_running
        clock.now += 0.03
        threads.end_step()
    assert threads.chosen == 1  # the decode steps' choice is not moved by it


def test_what_runs_now_counts_other_processes_not_this_ones_threads():
    import subprocess
    import sys
    import threading
    import time as clock_module

    from engine.serving.threads import OthersCpu

    import hashlib

    stop = threading.Event()
    data = bytes(32 << 20)

    def spin() -> None:  # this process's own busy thread, off the GIL: not another process
        while not stop.is_set():
            hashlib.sha256(data).digest()

    own = threading.Thread(target=spin)
    own.start()
    try:
        counts = [_spaced(OthersCpu.running_now) for _ in range(20)]
    finally:
        stop.set()
        own.join()
    assert counts.count(0) >= 10, counts  # a quiet test box: now and then something else runs
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        clock_module.sleep(0.3)
        counts = [_spaced(OthersCpu.running_now) for _ in range(20)]
    finally:
        neighbour.kill()
        neighbour.wait()
    assert counts.count(0) <= 2, counts


def _spaced(read):
    import time as clock_module

    clock_module.sleep(0.01)
    return read()


def test_prefills_between_decode_steps_do_not_hold_up_the_return_to_both_cores():
    """The prefills' reading of the cores must not use up the trials' turn: with a prefill
    every other step (clients joining all the time), the cores still come back soon after the
    neighbour leaves."""
    clock = FakeClock()
    elsewhere = [1.0]
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: elsewhere[0])

    def waves(cost, seconds: float) -> None:
        end = clock.now + seconds
        while clock.now < end and not (elsewhere[0] == 0.0 and threads.chosen == 2):
            threads.begin_step(9, prefill=True)
            clock.now += cost(threads.active) * 1.5
            threads.end_step()
            drive(threads, clock, cost, 1)

    drive(threads, clock, NEIGHBOUR, 10)
    waves(NEIGHBOUR, 3.0)
    assert threads.chosen == 1
    elsewhere[0] = 0.0
    left_at = clock.now
    waves(QUIET, 20.0)
    assert threads.chosen == 2 and clock.now - left_at <= 1.5


def test_after_an_idle_spell_a_task_runnable_at_one_look_only_leaves_the_prefill_every_core():
    """A client or kernel thread that wakes as the request arrives is runnable at one look; a
    process that keeps a core busy is runnable at every look (threads.RUNNABLE_LOOKS)."""
    clock, elsewhere, _ = streaming_on_one_thread()
    looks: list[int] = []
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: elsewhere[0],
                          running_elsewhere=lambda: looks.pop(0))
    drive(threads, clock, STREAMING, 400)
    assert threads.chosen == 1
    for seen, expected in (([1, 0, 1], 2), ([1, 1, 1], 1), ([2, 1, 1], 1), ([0], 2)):
        looks[:] = seen
        clock.now += 6.0
        threads.begin_step(9, prefill=True)
        assert threads.active == expected, seen
        assert not looks or seen == [1, 0, 1] and looks == [1]  # no look after a free one
        clock.now += 0.03
        threads.end_step()


class ColdSecondCore:
    """Step times where the core the second thread adds runs slow for 0.1 s after idle (as this
    VM's cores do): two threads win only once that core is warm."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.two_since = clock, None

    def __call__(self, count: int) -> float:
        if count == 1:
            self.two_since = None
            return 0.019
        if self.two_since is None:
            self.two_since = self.clock.now
        return 0.028 if self.clock.now - self.two_since < 0.1 else 0.014


def test_a_trial_of_more_threads_is_judged_once_the_core_it_adds_is_warm():
    clock, threads = after_a_neighbour_left()
    assert seconds_back_on_both_cores(threads, clock, ColdSecondCore(clock)) <= 2.0


def test_a_warming_trial_far_slower_than_the_chosen_count_stops_at_once():
    """A neighbour the look missed (the cores looked free) makes two-thread steps 4x slower:
    one such step ends the trial, not a whole warm-up of them."""
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 1.0)
    drive(threads, clock, NEIGHBOUR, 10)
    threads._busy_elsewhere = lambda: 0.0  # the reading says free; the neighbour is still there
    used = drive(threads, clock, {1: 0.016, 2: 0.064}.get, 2000)
    runs = "".join(str(count) for count in used).split("1")
    assert used.count(2) > 3 and max(len(run) for run in runs) == 1  # tried, one step each
    assert threads.chosen == 1


# --- a hiccup is not a neighbour; losing trials of fewer threads back off --------------------

def test_a_slow_step_with_no_other_process_runnable_is_a_hiccup_not_a_neighbour():
    """Measured on a 2-core AVX2 EPYC: one 155 ms step among 40 ms ones (nothing else running)
    was followed by three one-thread trials judged against it, and the count moved to one
    thread (52 ms steps) for the rest of the round. With nothing else runnable at that moment,
    the next step is an ordinary one."""
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 0.0, running_elsewhere=lambda: 0)
    drive(threads, clock, QUIET, 200)
    drive(threads, clock, lambda count: 0.04, 1)  # the hiccup: 4x the median, 30 ms over it
    used = drive(threads, clock, QUIET, 300)
    assert used[0] == 2 and threads.switches == 0


def test_a_slow_step_beside_a_runnable_neighbour_still_moves_the_count_at_once():
    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 1.0, running_elsewhere=lambda: 1)
    drive(threads, clock, QUIET, 200)
    used = drive(threads, clock, NEIGHBOUR, 20)
    assert threads.chosen == 1 and used.count(2) == 1


EMULATED_BF16 = {1: 0.150, 2: 0.090}.get  # AVX2 decode steps at batch 4: two threads 1.7x faster


def test_trials_of_fewer_threads_that_keep_losing_cost_little():
    """Every PROBE_SECONDS, a one-thread trial among 90 ms steps cost 12% of the time at 4
    clients on the AVX2 EPYC; losing ones now back off to DOWN_BACKOFF_MAX_SECONDS."""
    from engine.serving import threads as module

    clock = FakeClock()
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: 0.0, running_elsewhere=lambda: 0)
    drive(threads, clock, EMULATED_BF16, 100)
    start = clock.now
    used = drive(threads, clock, EMULATED_BF16, 2000)  # ~3 minutes
    extra = used.count(1) * (EMULATED_BF16(1) - EMULATED_BF16(2))
    assert threads.switches == 0 and 0 < used.count(1)
    assert used.count(1) <= (clock.now - start) / module.DOWN_BACKOFF_MAX_SECONDS + 5
    assert extra / (clock.now - start) < 0.01


def test_a_neighbour_seen_on_a_look_ends_the_back_off_of_fewer_threads():
    """A neighbour that slows two-thread steps without making one SUDDEN times slower: the
    look every PROBE_SECONDS sees it, and the trials resume at once, not after 8 s."""
    clock = FakeClock()
    elsewhere = [0.0]
    threads = GemmThreads(2, clock, busy_elsewhere=lambda: elsewhere[0], running_elsewhere=lambda: 0)
    drive(threads, clock, EMULATED_BF16, 2000)  # the back-off is at its longest by now
    elsewhere[0] = 1.0
    start = clock.now
    while threads.chosen == 2 and clock.now - start < 20:
        drive(threads, clock, {1: 0.150, 2: 0.200}.get, 1)
    assert threads.chosen == 1 and clock.now - start <= 2.0
