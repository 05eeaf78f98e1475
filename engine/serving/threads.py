"""How many threads the fused step's CPU GEMMs run on, chosen by measuring, not assumed.

Every core helps a GEMM only while every core is free. When another process keeps one busy (a
build, a training job, a benchmark client), each multi-threaded GEMM waits at its barrier for
the thread the kernel scheduler parked behind that process: measured on this project's 2-core
box with `python -c "while True: pass"` running beside the server, SmolLM2-135M served 0.9 tok/s
to one client with its GEMMs on 2 threads, against 58.6 with the server pinned to the free core
and 60-80 with no neighbour. A decode step alone (no HTTP) took 29.3 / 49.5 ms at batch 1 / 8
on 2 threads beside that neighbour, against 16.2 / 30.0 on one.

So the count is measured while serving. A trial runs one whole step on a neighbouring count
(one thread fewer or one more) and compares its time with the median of recent steps of the same
size on the chosen count; WINS_TO_SWITCH trials in a row at least MARGIN faster switch the
count. Two shorter trials were tried here and mislead: alternating counts layer by layer within
a step (the OpenMP worker still spins between two-thread layers and slows the one-thread layers
beside them: beside the neighbour it favoured 2 threads by 1.1-1.6x, the slower choice), and
trying only the first 6 layers of a step (2-3 ms, shorter than a scheduler time slice: two
threads won such bursts beside the neighbour at batch 1 and lost the steps).

Trials run on decode steps of a busy server, never on the step after an idle spell (a cold
step, slower either way, and a first token's wait) and never on a prefill step unless a sudden
slowdown calls for one. A trial of fewer threads runs every PROBE_SECONDS, and at once after a step SUDDEN times slower
than its size's median and SUDDEN_MIN_SECONDS over it (a neighbour starting mid-serving; without that, the median took three
slow steps to move, 3.6 s beside that neighbour, and one request waited 0.48 s for its first
token), if another process's task is runnable right then: a step slowed by this process's own
hiccup (a page fault, a burst of HTTP work) is no neighbour. On a 2-core AVX2 EPYC one 155 ms
step among 40 ms ones moved a one-client server to one thread (52 ms steps there), where it
stayed for the rest of the bench's round: 20 tok/s against 26.7 with the count held at two.
Trials of fewer threads that lose back off, doubling their wait up to DOWN_BACKOFF_MAX_SECONDS,
until a sudden step or a look that sees another process on a core the chosen count uses.

A trial of more threads is the expensive side: beside that neighbour a two-thread step
of the server took 1.2 s at batch 1 and 0.3 s at batch 8 (16 and 30 ms on one thread). So it
backs off after each loss (up to UP_BACKOFF_MAX_SECONDS) and waits until the cores it would add
look free: the CPU time other processes used since the last look, every PROBE_SECONDS
(/proc/stat's busy time less this process's own), must leave at least half a core beyond those
the chosen count occupies. Cores seen busy and then free end the back-off: the neighbour left.
Its first UP_WARMUP_SECONDS of steps are not judged (the core it adds was idle and runs slow at
first), unless one is SUDDEN times slower than the chosen count's median: that ends it at once.

The count is chosen on decode steps; a prefill step runs on every thread while the last look
saw the cores free, or after an idle spell while no other process is runnable at that instant
(GemmThreads._boost): many rows per weight, where two threads win clearly.

The same measuring covers a slowdown inside the process: libgomp stops spinning when it manages
more threads than there are cores, which happens when a second thread (two versions stepping at
once, or a test's main thread) has run multi-threaded regions; two-thread steps then measured
slower than one-thread steps (3.4 against 2.3 ms on a small model), and the count follows.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Callable

PROBE_SECONDS = 0.5  # between trials of fewer threads
FRESH_LOOK_SECONDS = 0.1  # a /proc/stat reading this recent still says how busy the cores are
UP_BACKOFF_MAX_SECONDS = 8.0  # the longest wait between trials of more threads
# The longest wait between trials of fewer threads once they keep losing. Each costs a step on
# fewer threads: every PROBE_SECONDS that was 12% of the time at 4 clients on a 2-core AVX2 EPYC
# (bf16 emulated: decode steps ~90 ms on two threads, ~150 on one); a look every PROBE_SECONDS
# that sees another process take a core the chosen count uses ends the back-off.
DOWN_BACKOFF_MAX_SECONDS = 8.0
MARGIN = 0.05  # a trial wins when its step takes at most 95% of the chosen count's median
WINS_TO_SWITCH = 3
BASELINE_STEPS = 5  # recent steps of one size on the chosen count
SUDDEN = 3.0  # a step this many times its size's median: try fewer threads at the next step
SUDDEN_MIN_SECONDS = 0.02  # ...and this much slower: a few ms of hiccup on a small step is not one
BASELINE_NEEDED = 3
# A step starting this long after the last one ended is a cold one: measured after 1.5 s idle,
# a 9-token prefill took 32-43 ms against 20-25 back to back, and it was what a trial at that
# moment would have been judged by (the first step after idle used to be a one-thread trial,
# every time: a first token's wait paid for it).
IDLE_GAP_SECONDS = 0.05
# A trial of more threads runs unjudged this long first: the core it adds was idle, and a core
# runs slow for ~100 ms after idle on this VM (decode steps ~13 ms, then ~8 after ten steps).
# Judged from its first step, a two-thread trial after one-thread serving lost every time
# (batch 8: 20.6-28.2 ms against 18.7-19.7 on one thread, where two threads serve at ~14), so
# a server that once dropped to one thread stayed there (331 against 466 tok/s at 8 clients).
UP_WARMUP_SECONDS = 0.12
RUNNABLE_LOOKS = 3  # looks at what is runnable elsewhere before a prefill after an idle spell
RUNNABLE_LOOK_SECONDS = 0.0005  # between them


class GemmThreads:
    """The GEMM thread count of one model step; `active` is what a GEMM called now should use."""

    def __init__(self, most: int, clock: Callable[[], float] = time.perf_counter,
                 busy_elsewhere: Callable[[], float | None] | None = None,
                 running_elsewhere: Callable[[], int | None] | None = None) -> None:
        """busy_elsewhere: cores other processes kept busy since its last call (None: unknown);
        running_elsewhere: their tasks runnable right now (None: unknown). Given one of them,
        the other defaults to unknown."""
        self.most = max(1, most)
        if busy_elsewhere is None and running_elsewhere is None:
            busy_elsewhere, running_elsewhere = OthersCpu().cores, OthersCpu.running_now
        self._busy_elsewhere = busy_elsewhere or (lambda: None)
        self._running_elsewhere = running_elsewhere or (lambda: None)
        self.chosen = self.active = self.most
        self.switches = 0
        self._clock = clock
        self._baselines: dict[int, deque[float]] = {}  # step size in tokens -> step seconds
        self._sudden: dict[int, float] = {}  # step size -> a step far slower than its median
        self._tokens = 0
        self._trial: int | None = None
        self._boosted = False  # this step runs on every thread, outside the measuring
        self._started = 0.0
        self._ended = -1e9  # when the last step ended (a step after a gap is a cold one)
        self._cold = True
        self._streak: tuple[int, int] = (0, 0)  # (trial count, consecutive wins)
        self._warming_until: float | None = None  # a trial of more threads, unjudged until then
        now = clock()
        self._last_down = self._last_up = self._last_look = self._last_up_check = now
        self._up_wait = self._down_wait = PROBE_SECONDS
        self._cores_were_busy = False
        self._elsewhere: float | None = None  # cores others kept busy, at the last look

    def begin_step(self, tokens: int, prefill: bool = False) -> None:
        """Before a step of `tokens` tokens (`prefill`: it prefills a prompt): sets `active`, a
        trial's count or the chosen one. The first step after an idle spell (a cold step) is
        no trial and no baseline, and a prefill step is a trial only right after a sudden
        slowdown: their time is a first token's wait. A prefill step runs on every thread
        while the cores look free (see _boost)."""
        self._started = self._clock()
        self._tokens = tokens
        self._cold = self._started - self._ended > IDLE_GAP_SECONDS
        self._trial = None if self._cold else self._due_trial(tokens, periodic=not prefill)
        self._boosted = self._trial is None and prefill and self._boost()
        self.active = self.most if self._boosted else self._trial or self.chosen

    def end_step(self) -> None:
        """After the step's last GEMM: keeps its time, and judges it if it was a trial."""
        self._ended = self._clock()
        if not self._boosted:  # a time on another count says nothing of the chosen one
            self._record(self._ended - self._started, cold=self._cold)
        self.active = self.chosen

    def _boost(self) -> bool:
        """Whether a prefill step should run on every thread although fewer were chosen: yes
        while the cores beyond the chosen count looked free at the latest look (the trials'
        looks, every PROBE_SECONDS while serving); after an idle spell, while no other
        process's task is runnable right now.

        Why: the count is chosen on decode steps, where the other core's work is this
        server's own streaming (the event loop, the clients) and one thread can win by a few
        percent at batch 1; a prefill multiplies 8-64 rows per weight, where two threads
        win clearly, and while it runs nothing streams. Measured here (SmolLM2-135M, one
        request, in-process): a 9-token prefill took 29.4 ms on one thread and 21.9 on two,
        a 32-token one 39.2 and 25.8; a one-client bench run had drifted to one thread and
        paid that on every first token."""
        if self.chosen >= self.most:
            return False
        now = self._clock()
        if now - self._last_look >= 2 * PROBE_SECONDS:  # stale (an idle spell): look now
            self._look(now)
            # That look covers the whole spell, which may have been another process's burst
            # that is over now (in bench/serve_vs_vllm.py, vLLM's turn: the first prefill after
            # it ran on one thread, 43-65 ms for 4 prompts against ~25 on two). What is
            # runnable at this instant says whether the cores are free now.
            running = self._running_elsewhere_briefly()
            if running is not None:
                return running == 0
        return self._elsewhere is not None and not self._too_busy_for(self.most)

    def _running_elsewhere_briefly(self) -> int | None:
        """The fewest other runnable tasks over a few looks RUNNABLE_LOOK_SECONDS apart: a
        process that keeps a core busy is runnable at every look, while the clients and
        kernel threads that wake as a request arrives are runnable at one (one look at
        that moment ran a benchmark's first prefill on one thread, 40 ms against ~22)."""
        fewest: int | None = None
        for look in range(RUNNABLE_LOOKS):
            if look:
                time.sleep(RUNNABLE_LOOK_SECONDS)
            running = self._running_elsewhere()
            if running is None:
                return fewest
            fewest = running if fewest is None else min(fewest, running)
            if fewest == 0:
                break
        return fewest

    def describe(self) -> str:
        return f"GEMMs on 1 to {self.most} threads, measured while serving"

    def _due_trial(self, tokens: int, periodic: bool) -> int | None:
        if self.most == 1:
            return None
        trial, wins = self._streak
        if self._warming_until is not None and periodic and (
                len(self._baselines.get(tokens, ())) >= BASELINE_NEEDED):
            now = self._clock()
            if now > self._warming_until + PROBE_SECONDS:  # interrupted (idle): warm it again
                self._warming_until = now + UP_WARMUP_SECONDS
            return self.chosen + 1  # the trial of more threads goes on, warming its core
        if tokens in self._sudden and self.chosen > 1:
            return trial if wins else self.chosen - 1
        if not periodic or len(self._baselines.get(tokens, ())) < BASELINE_NEEDED:
            return None
        if wins:
            return trial  # confirm a first win at once
        now = self._clock()
        if self.chosen > 1 and self._down_wait > PROBE_SECONDS and (
                now - self._last_look >= PROBE_SECONDS):
            self._look(now)
            if self._too_busy_for(self.chosen):  # another process takes a core we use
                self._down_wait = PROBE_SECONDS
        if self.chosen > 1 and now - self._last_down >= self._down_wait:
            self._last_down = now
            return self.chosen - 1
        if self.chosen < self.most and now - self._last_up_check >= PROBE_SECONDS:
            # Its own cadence: a prefill's look (_boost) must not use up this one's turn. A look
            # that recent is reused: its window ended moments ago.
            self._last_up_check = now
            if now - self._last_look >= FRESH_LOOK_SECONDS:
                self._look(now)
            if not self._too_busy_for(self.chosen + 1) and now - self._last_up >= self._up_wait:
                self._last_up = now
                self._warming_until = now + UP_WARMUP_SECONDS
                return self.chosen + 1
        return None

    def _look(self, now: float) -> None:
        """Reads how busy other processes kept the cores since the last look."""
        self._last_look = now
        self._elsewhere = self._busy_elsewhere()
        if self.chosen >= self.most:  # what follows is about a core the chosen count leaves
            return
        if self._too_busy_for(self.chosen + 1):
            self._cores_were_busy = True
        elif self._cores_were_busy:  # they were busy and are free now: earlier losses are moot
            self._cores_were_busy, self._up_wait = False, PROBE_SECONDS

    def _too_busy_for(self, count: int) -> bool:
        """Whether the other processes' load at the last look leaves less than half a core for
        the last of `count` threads (an unknown load does not say so)."""
        return self._elsewhere is not None and self.most - self._elsewhere < count - 0.5

    def _record(self, seconds: float, cold: bool) -> None:
        """A cold step only says whether it was sudden (a neighbour that started while the
        server idled): a few cold milliseconds are far under SUDDEN, and not a baseline."""
        if self._trial is None:
            history = self._baselines.setdefault(self._tokens, deque(maxlen=BASELINE_STEPS))
            if (self.chosen > 1 and len(history) >= BASELINE_NEEDED
                    and seconds > max(SUDDEN * statistics.median(history),
                                      statistics.median(history) + SUDDEN_MIN_SECONDS)
                    and self._running_elsewhere_briefly() != 0):
                self._sudden[self._tokens] = seconds
                self._down_wait = PROBE_SECONDS
            if not cold:
                history.append(seconds)
            return
        baseline = (self._sudden.get(self._tokens)
                    or statistics.median(self._baselines[self._tokens]))
        trial, self._trial = self._trial, None
        if self._warming_until is not None and trial > self.chosen:
            if self._started < self._warming_until:  # its core still warming: not judged...
                if seconds <= max(SUDDEN * baseline, baseline + SUDDEN_MIN_SECONDS):
                    return
                seconds = float("inf")  # ...unless far slower: a neighbour the look missed
            self._warming_until = None
        if seconds > (1.0 - MARGIN) * baseline:
            self._sudden.pop(self._tokens, None)
            self._streak = (0, 0)
            if trial > self.chosen:  # more threads lost: wait longer before trying again
                self._up_wait = min(2 * self._up_wait, UP_BACKOFF_MAX_SECONDS)
            else:
                self._down_wait = min(2 * self._down_wait, DOWN_BACKOFF_MAX_SECONDS)
            return
        wins = self._streak[1] + 1 if self._streak[0] == trial else 1
        self._streak = (trial, wins)
        if wins >= WINS_TO_SWITCH:
            self.chosen, self._streak = trial, (0, 0)
            self._baselines.clear()  # the old count's times say nothing about the new one
            self._sudden.clear()
            self._up_wait = self._down_wait = PROBE_SECONDS
            self._last_down = self._last_up = self._last_look = self._last_up_check = self._clock()
            self.switches += 1


class OthersCpu:
    """How many cores other processes kept busy, on average, between two calls of `cores`.

    Linux only (/proc/stat); elsewhere `cores` returns None. Steal time counts as busy: a core
    the hypervisor gave to another guest is not free either."""

    def __init__(self) -> None:
        self._last = self._read()

    def cores(self) -> float | None:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[0] <= last[0]:
            return None
        wall, busy, own = (now_value - last_value for now_value, last_value in zip(now, last))
        return max(0.0, (busy - own) / wall)

    @staticmethod
    def running_now() -> int | None:
        """Tasks of other processes runnable at this instant: /proc/loadavg's count of running
        tasks (the whole machine's, this thread included) less this process's threads in state
        R. ~0.1-0.5 ms (a file per thread), so it is read only after an idle spell."""
        import os

        try:
            with open("/proc/loadavg", encoding="ascii") as loadavg:
                running = int(loadavg.read().split()[3].split("/")[0])
            own = 0
            with os.scandir("/proc/self/task") as tasks:
                for task in tasks:
                    try:
                        with open(f"{task.path}/stat", encoding="ascii", errors="replace") as stat:
                            text = stat.read()
                    except OSError:  # the thread ended meanwhile
                        continue
                    own += text[text.rindex(")") + 2] == "R"
        except (OSError, ValueError, IndexError):
            return None
        return max(0, running - own)

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        """(monotonic seconds, busy CPU seconds of the whole machine, this process's CPU seconds)."""
        import os

        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
        times = os.times()
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), times.user + times.system
