"""The fused step's glue (engine/serving/stepglue.py): modeldeck's C kernels for residual add +
RMSNorm, rotary embedding and the SiLU-gated product give what the torch ops they replace give,
row by row, and the step picks them only where they apply. Together with
tests/serving/test_scheduler_logits.py (the whole step against the model's own forward, on the
kernels for bf16 and int8), this is what stands behind the kernels. Skipped, with the reason the
server would report, on a CPU without AVX512-BF16 or a machine without a C compiler."""

from __future__ import annotations

import pytest

from engine.serving.stepglue import KernelGlue, RmsNorm, TorchGlue, choose_glue

ROWS = (1, 8, 9, 40)


def _bf16(*shape: int, seed: int, scale: float = 1.0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale).to(torch.bfloat16)


class _Norm:  # what RmsNorm reads off transformers' module
    def __init__(self, weight, eps: float) -> None:
        self.weight, self.variance_epsilon = weight, eps


def _at_most_one_step_apart(result, reference) -> None:
    """Equal, but for a rare one-bf16-step difference (an fp32 sum or exp rounded differently
    just at a bf16 rounding boundary)."""
    import torch

    assert result.dtype == reference.dtype == torch.bfloat16 and result.shape == reference.shape
    differ = result != reference
    assert differ.float().mean().item() < 1e-3, f"{int(differ.sum())} of {differ.numel()} differ"
    steps = (result.view(torch.int16).int() - reference.view(torch.int16).int()).abs()
    assert int(steps.max()) <= 1


@pytest.mark.parametrize("rows", ROWS)
def test_residual_add_and_norm_match_torch(cpu_kernels, rows):
    import torch

    hidden, delta = _bf16(rows, 576, seed=rows, scale=4.0), _bf16(rows, 576, seed=rows + 1)
    norm = RmsNorm(_Norm((torch.rand(576) + 0.5).to(torch.bfloat16), 1e-5))
    expected_hidden, expected = TorchGlue.add_norm(hidden, delta, norm)
    summed, normed = KernelGlue(cpu_kernels).add_norm(hidden.clone(), delta, norm)
    assert torch.equal(summed, expected_hidden)  # bf16 adds round one way only
    _at_most_one_step_apart(normed, expected)
    alone, normed_alone = KernelGlue(cpu_kernels).add_norm(hidden.clone(), None, norm)
    assert torch.equal(alone, hidden)  # no delta: nothing added
    _at_most_one_step_apart(normed_alone, norm(hidden))


@pytest.mark.parametrize("rows", ROWS)
def test_silu_gated_product_matches_torch(cpu_kernels, rows):
    gate_up = _bf16(rows, 2 * 1536, seed=rows, scale=3.0)
    expected = TorchGlue.silu_mul(gate_up, [1536, 1536])
    _at_most_one_step_apart(KernelGlue(cpu_kernels).silu_mul(gate_up, [1536, 1536]), expected)


@pytest.mark.parametrize("head_dim", [16, 48, 64, 128])
@pytest.mark.parametrize("rows", [1, 9])
def test_rotary_matches_torch_and_leaves_the_value_heads_alone(cpu_kernels, head_dim, rows):
    import torch

    heads = _bf16(rows, 9 + 3 + 3, head_dim, seed=head_dim, scale=2.0)  # q 9, k 3, v 3 heads
    cos, sin = _bf16(rows, 1, head_dim, seed=1), _bf16(rows, 1, head_dim, seed=2)
    expected = TorchGlue.rotate(heads, 12, cos, sin)
    rotated_in_place = heads.clone()
    result = KernelGlue(cpu_kernels).rotate(rotated_in_place, 12, cos, sin)
    assert torch.equal(result, expected)  # three bf16 roundings, each as torch's
    assert torch.equal(rotated_in_place[:, 12:], heads[:, 12:])


@pytest.mark.parametrize("first,rows,q,columns", [
    (0, 1, 5, [[0, 1, 2, 3, 4]]),  # a prompt's chunk into slot 0
    (2, 3, 1, [[7], [0], [32]]),  # decode rows into slots 2-4; the last one idle (scratch column)
    (1, 2, 3, [[4, 5, 6], [0, 1, 32]]),  # two chunks, one padded into the scratch column
])
def test_kv_writes_land_where_torchs_indexing_puts_them(cpu_kernels, first, rows, q, columns):
    import types

    import torch

    from engine.serving.kvcache import ForwardPart, SlotKVCache

    config = types.SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                                   hidden_size=576, num_hidden_layers=2)
    write = torch.tensor(columns)
    part = ForwardPart(first, torch.zeros(rows, q, dtype=torch.long), write, write, 20, None,
                       torch.arange(first, first + rows)[:, None])
    # Keys and values as the step has them: views into one qkv output, a token's heads together.
    heads = _bf16(rows * q, 9 + 3 + 3, 64, seed=rows)
    key, value = heads[:, 9:12], heads[:, 12:]
    written = []
    for glue in (TorchGlue(), KernelGlue(cpu_kernels)):
        cache = SlotKVCache(config, slots=5, slot_len=32, dtype=torch.bfloat16, device="cpu")
        for layer_cache, seed in ((cache.keys[1], 10), (cache.values[1], 11)):
            layer_cache.copy_(_bf16(*layer_cache.shape, seed=seed))  # what earlier steps left
        before = [tensor.clone() for tensor in (cache.keys[1], cache.values[1])]
        keys, values = glue.write_read(cache, 1, part, key, value)
        assert keys.shape == values.shape == (rows, 3, 20, 64)
        written.append((cache.keys[1], cache.values[1], keys, values, before))
    (torch_keys, torch_values, *_), (ours_keys, ours_values, keys, values, before) = written
    assert torch.equal(ours_keys, torch_keys) and torch.equal(ours_values, torch_values)
    assert not torch.equal(ours_keys, before[0])  # something was written
    assert torch.equal(keys, ours_keys[first:first + rows, :, :20])
    assert torch.equal(values, ours_values[first:first + rows, :, :20])


def test_a_rows_glue_does_not_depend_on_the_rows_beside_it(cpu_kernels):
    import torch

    glue = KernelGlue(cpu_kernels)
    hidden, delta = _bf16(40, 576, seed=3, scale=4.0), _bf16(40, 576, seed=4)
    norm = RmsNorm(_Norm(_bf16(576, seed=5), 1e-6))
    gate_up = _bf16(40, 2 * 1536, seed=6, scale=3.0)
    _, batched = glue.add_norm(hidden.clone(), delta, norm)
    gated = glue.silu_mul(gate_up, [1536, 1536])
    for row in (0, 17, 39):
        _, alone = glue.add_norm(hidden[row:row + 1].clone(), delta[row:row + 1], norm)
        assert torch.equal(alone, batched[row:row + 1])
        assert torch.equal(glue.silu_mul(gate_up[row:row + 1].contiguous(), [1536, 1536]),
                           gated[row:row + 1])


def test_the_step_takes_the_kernels_for_bf16_on_this_cpu_and_torch_ops_otherwise(cpu_kernels,
                                                                                 tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from engine.serving.modelstep import choose_step

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    step = choose_step(model)
    assert isinstance(step.glue, KernelGlue) and "modeldeck norms and rotary" in step.reason
    assert isinstance(choose_glue(model, 512), TorchGlue)  # a head wider than the cpu_kernels take
    assert isinstance(choose_glue(model.float(), 16), TorchGlue)  # fp32 hidden states
