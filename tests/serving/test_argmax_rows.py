"""The blocked CPU argmax picks exactly what `Tensor.argmax` picks: the first index of each
row's maximum, whatever the width (padded blocks) and however many ties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.serving.sampling import ARGMAX_BLOCK, argmax_rows


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), width=st.integers(1, 3 * ARGMAX_BLOCK + 7),
       levels=st.integers(1, 4), seed=st.integers(0, 2**16), dtype=st.sampled_from(["float32",
                                                                                  "bfloat16"]))
def test_blocked_argmax_is_torch_argmax(rows, width, levels, seed, dtype):
    import torch

    generator = torch.Generator().manual_seed(seed)
    # Few distinct values: most rows have their maximum at several places (ties).
    values = torch.randint(0, levels, (rows, width), generator=generator).to(getattr(torch, dtype))
    assert argmax_rows(values).tolist() == values.float().argmax(dim=-1).tolist()


def test_the_maximum_in_the_last_partial_block_is_found():
    import torch

    values = torch.zeros(2, ARGMAX_BLOCK + 3)
    values[0, -1] = 5.0
    values[1, ARGMAX_BLOCK] = -1.0  # row 1: all zeros but one; the first zero wins
    assert argmax_rows(values).tolist() == [ARGMAX_BLOCK + 2, 0]
