"""The compress verb refuses numbers a run can only fail with (inf, nan, absurd counts) before a
job exists: the engine judges, so the CLI and the console's form get the same one line."""

from __future__ import annotations

import pytest

from engine import actions
from engine.errors import BadInput


@pytest.mark.parametrize("method, options, expected", [
    ("distill", {"learning_rate": float("inf")}, "--learning-rate must be a finite number"),
    ("distill", {"temperature": float("nan")}, "--temperature must be a finite number"),
    ("distill", {"steps": 10**12}, "--steps must be at most"),
    ("prune", {"sparsity": float("nan")}, "--sparsity must be a finite number"),
    ("int8", {"max_ppl_increase": float("inf")}, "--max-ppl-increase must be a finite number"),
])
def test_non_finite_and_absurd_numbers_are_refused(deck, tiny_model_dir, method, options, expected):
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    with pytest.raises(BadInput, match=expected):
        actions.compress(deck, actions.CompressRequest("tiny@1", method, options))
    assert not deck.paths.jobs.exists() or not any(deck.paths.jobs.iterdir())
