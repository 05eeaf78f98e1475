"""Playback over a recording's frame times, with a clock the test moves."""

from __future__ import annotations

from console.recording import Playback


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_play_step_seek_speed_and_the_end():
    clock = Clock()
    playback = Playback([0.0, 1.0, 2.0, 3.0, 10.0], clock)
    assert (playback.index(), playback.playing) == (0, False)
    clock.now += 5
    assert playback.index() == 0  # paused: the clock does not move it
    playback.set_speed(4.0)
    playback.toggle()
    clock.now += 0.5  # 2 s of recording at 4x
    assert playback.index() == 2
    playback.step(1)  # steps pause
    assert (playback.index(), playback.playing) == (3, False)
    playback.step(-10)
    assert playback.index() == 0
    playback.seek(9.9)
    assert playback.index() == 3
    playback.toggle()
    clock.now += 100
    assert (playback.index(), playback.playing) == (4, False)  # stopped at the end
    playback.toggle()  # from the start again
    assert (playback.index(), playback.playing) == (0, True)
    playback.set_speed(1000)
    assert playback.speed == 64.0
    playback.seek(-50)
    assert playback.now() == 0.0
