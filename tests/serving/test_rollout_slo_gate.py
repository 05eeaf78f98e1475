"""The rollout's SLO-attainment gates: with deck.toml [slo] bounds, a candidate whose share of
requests within a bound trails live's by more than the margin fails its step; without [slo]
there is no such gate."""

from __future__ import annotations

from engine.actions.rollouts import RolloutRequest, rollout_settings
from engine.config import RolloutSettings
from engine.serving.rollout import VersionWindow, describe_failure, judge

BOUNDS = (0.05, 0.1, 0.2, 0.5, float("inf"))


def window(ttft_counts: tuple[float, ...]) -> VersionWindow:
    """Per-bucket (not cumulative) TTFT counts over BOUNDS; every request answered."""
    cumulative, running = [], 0.0
    for bound, count in zip(BOUNDS, ttft_counts):
        running += count
        cumulative.append((bound, running))
    return VersionWindow(ttft=tuple(cumulative), outcomes=(("stop", running),))


def gate(gates: list[dict], name: str) -> dict:
    return next(g for g in gates if g["gate"] == name)


def test_a_candidate_missing_the_ttft_slo_more_often_fails_its_gate():
    live = window((90, 10, 0, 0, 0))        # 100% within 0.1 s
    slower = window((50, 30, 20, 0, 0))     # 80% within 0.1 s
    # The p95 gates alone would not catch it: the ratio is loose, the SLO is not.
    settings = RolloutSettings(slo_ttft_s=0.1, ttft_p95_ratio=3.0)
    gates = judge(slower, live, settings)
    ttft = gate(gates, "ttft_slo")
    assert ttft["ok"] is False and ttft["candidate"] == 0.8 and ttft["live"] == 1.0
    assert gate(gates, "ttft_p95")["ok"] is True
    assert describe_failure(ttft) == ("ttft_slo gate failed: 80.0% of the candidate's requests "
                                      "met the SLO < limit 98.0% (live 100.0%)")
    assert gate(judge(window((89, 11, 0, 0, 0)), live, settings), "ttft_slo")["ok"] is True


def test_without_slo_bounds_there_is_no_slo_gate():
    gates = judge(window((50, 30, 20, 0, 0)), window((90, 10, 0, 0, 0)), RolloutSettings())
    assert not [g for g in gates if g["gate"].endswith("_slo")]


def test_the_decks_slo_bounds_reach_the_rollout_settings(deck_home, deck):
    deck_home.mkdir(parents=True, exist_ok=True)
    (deck_home / "deck.toml").write_text("[slo]\nttft_s = 0.5\nitl_s = 0.05\n")
    from engine.deck import Deck

    with_slo = Deck.at(deck_home)
    try:
        settings = rollout_settings(with_slo, RolloutRequest("tiny@2"))
    finally:
        with_slo.close()
    assert (settings.slo_ttft_s, settings.slo_itl_s) == (0.5, 0.05)
