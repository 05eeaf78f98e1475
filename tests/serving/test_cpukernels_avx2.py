"""modeldeck's GEMMs for CPUs with AVX2 but no AVX512-BF16 (engine/data/cpu_kernels_avx2.c,
engine.serving.cpukernels.Avx2Kernels), on int8 and bf16 weights: results against an fp64
reference and against torch's own int8 kernel, bit-identical rows whatever the batch, and the
serving step choosing them for a bf16 or an int8 version. Runs on any x86 CPU with AVX2 (an
AVX512 one too: the kernels are built there as well); skipped, with the reason, elsewhere."""

from __future__ import annotations

import pytest

from engine.serving import cpukernels

ROWS = (1, 2, 3, 4, 5, 8, 9, 17, 64)  # the 1-2 row two-block kernel, 4-row groups, remainders


@pytest.fixture
def kernels():
    if not cpukernels._cpu_has("avx2", "fma"):
        pytest.skip("this CPU has no AVX2")
    library, reason = cpukernels._library()
    if library is None:
        pytest.skip(reason)
    return cpukernels.Avx2Kernels(library)


def _int8(out_features: int, in_features: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.05
    weight[::7] *= 20  # outlier rows: per-row scales must keep them apart
    scales = weight.abs().amax(1) / 127
    quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    bias = torch.randn(out_features, generator=generator)
    return quantized, scales, bias


@pytest.mark.parametrize("rows", ROWS)
def test_results_are_the_exact_products_rounded_once_to_bf16(kernels, rows):
    """fp32 sums of exact products: within a bf16 rounding of the fp64 answer, and torch's own
    int8 kernel (what the int8 format's forward runs) agrees."""
    import torch

    quantized, scales, bias = _int8(96, 200, seed=rows)  # 6 blocks: pairs and an odd one out
    hidden = torch.randn(rows, 200).to(torch.bfloat16)
    packed = kernels.pack(quantized, scales, bias)
    result = packed(hidden, threads=2)
    assert result.dtype == torch.bfloat16 and result.shape == (rows, 96)
    exact = hidden.double() @ (quantized.double() * scales.double()[:, None]).T + bias.double()
    torch.testing.assert_close(result.double(), exact, rtol=4e-3, atol=1e-3)
    theirs = torch._weight_int8pack_mm(hidden, quantized, scales.to(torch.bfloat16)) + bias
    torch.testing.assert_close(result.float(), theirs.float(), rtol=2e-2, atol=2e-2)
    assert packed.weight.dtype == torch.int8  # int8 stays int8: half the bytes to stream


@pytest.mark.parametrize("rows", ROWS)
def test_bf16_weights_give_the_exact_products_rounded_once(kernels, rows):
    import torch

    quantized, scales, bias = _int8(96, 200, seed=50 + rows)
    weight = (quantized.float() * scales[:, None]).to(torch.bfloat16)  # any bf16 weights
    hidden = torch.randn(rows, 200).to(torch.bfloat16)
    result = kernels.pack(weight, None, bias)(hidden, threads=2)
    assert result.dtype == torch.bfloat16 and result.shape == (rows, 96)
    exact = hidden.double() @ weight.double().T + bias.double()
    torch.testing.assert_close(result.double(), exact, rtol=4e-3, atol=1e-3)
    theirs = torch.nn.functional.linear(hidden, weight, bias.to(torch.bfloat16))
    torch.testing.assert_close(result.float(), theirs.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("blocks", [32, 33, 34, 35])
def test_every_output_block_is_computed_whatever_the_count(kernels, blocks):
    """At one row the kernel takes blocks four at a time where there are enough: the last unit
    may hold one, two or three."""
    import torch

    quantized, scales, bias = _int8(16 * blocks, 40, seed=blocks)
    hidden = torch.randn(1, 40).to(torch.bfloat16)
    result = kernels.pack(quantized, scales, bias)(hidden, threads=2)
    exact = hidden.double() @ (quantized.double() * scales.double()[:, None]).T + bias.double()
    torch.testing.assert_close(result.double(), exact, rtol=4e-3, atol=1e-3)


def test_no_bias_and_one_element_blocks_of_k(kernels):
    import torch

    quantized, scales, _ = _int8(32, 3, seed=3)
    hidden = torch.randn(2, 3).to(torch.bfloat16)
    result = kernels.pack(quantized, scales)(hidden, threads=1)
    exact = hidden.double() @ (quantized.double() * scales.double()[:, None]).T
    torch.testing.assert_close(result.double(), exact, rtol=4e-3, atol=1e-3)


@pytest.mark.parametrize("int8", [True, False], ids=["int8", "bf16"])
def test_a_rows_result_does_not_depend_on_the_rows_beside_it(kernels, int8):
    """Bit for bit, alone (the four-block kernel), in a decode batch (4-row groups and a
    remainder) and in a prefill: a sequence's text does not change with its batch."""
    import torch

    quantized, scales, bias = _int8(1024, 1536, seed=11)  # long sums: the order shows
    weight = (quantized.float() * scales[:, None]).to(torch.bfloat16)
    packed = kernels.pack(quantized, scales, bias) if int8 else kernels.pack(weight, None, bias)
    hidden = torch.randn(40, 1536).to(torch.bfloat16)
    together = packed(hidden, threads=2)
    for row in (0, 3, 4, 7, 8, 23, 39):
        assert torch.equal(packed(hidden[row:row + 1], threads=2)[0], together[row])
    assert torch.equal(packed(hidden[8:10], threads=1), together[8:10])
    assert torch.equal(packed(hidden[8:13], threads=1), together[8:13])


def test_leading_dimensions_and_thread_counts_do_not_change_the_result(kernels):
    import torch

    quantized, scales, _ = _int8(48, 16, seed=7)
    hidden = torch.randn(2, 5, 16).to(torch.bfloat16)
    packed = kernels.pack(quantized, scales)
    one, two = packed(hidden, threads=1), packed(hidden, threads=2)
    assert one.shape == (2, 5, 48) and torch.equal(one, two)


def test_shapes_off_the_blocks_and_int8_without_scales_are_refused(kernels):
    import torch

    assert not kernels.fits(40, 16) and kernels.fits(48, 15)
    with pytest.raises(ValueError, match="does not fit"):
        kernels.pack(torch.zeros(40, 16, dtype=torch.int8), torch.ones(40))
    with pytest.raises(ValueError, match="scales"):
        kernels.pack(torch.zeros(32, 16, dtype=torch.int8))
    with pytest.raises(ValueError, match="scales"):
        kernels.pack(torch.zeros(32, 16, dtype=torch.bfloat16), torch.ones(32))


def test_the_gemm_loader_says_why_when_nothing_applies(monkeypatch):
    monkeypatch.setattr(cpukernels, "_LOADED", {})
    monkeypatch.setenv(cpukernels.SWITCH, "off")
    assert cpukernels.load_gemm() == (None, f"turned off by {cpukernels.SWITCH}")
    monkeypatch.setattr(cpukernels, "_LOADED", {})
    monkeypatch.delenv(cpukernels.SWITCH)
    monkeypatch.setattr(cpukernels, "_cpu_has", lambda *flags: False)
    assert cpukernels.load_gemm() == (None, "this CPU has neither AVX512-BF16 nor AVX2")


def test_bf16_linears_in_the_serving_step_run_these_kernels(kernels):
    import torch

    from engine.serving.linears import FusedLinear

    if cpukernels.load()[0] is not None:
        pytest.skip("this CPU has AVX512-BF16: the step runs the full kernel set")
    layers = [torch.nn.Linear(48, 32, bias=seed == 1).to(torch.bfloat16) for seed in (1, 2)]
    fused = FusedLinear(layers)
    assert fused.kernel == "bf16" and fused.packed.weight.dtype == torch.bfloat16
    hidden = torch.randn(3, 48).to(torch.bfloat16)
    with torch.inference_mode():
        theirs = torch.cat([layer(hidden) for layer in layers], dim=1)
        torch.testing.assert_close(fused(hidden).float(), theirs.float(), rtol=2e-2, atol=2e-2)


def test_an_int8_linear_in_the_serving_step_runs_this_kernel_and_matches_its_forward(kernels):
    """Where the full AVX512 set is missing, FusedLinear over int8 layers takes this kernel
    (the weights stay int8) and gives what the int8 format's own forward gives."""
    import torch

    from engine.modelio.int8 import Int8Linear
    from engine.serving.linears import FusedLinear

    if cpukernels.load()[0] is not None:
        pytest.skip("this CPU has AVX512-BF16: the step runs the full kernel set")
    layers = []
    for seed in (1, 2):
        quantized, scales, bias = _int8(64, 48, seed=seed)
        layer = Int8Linear(48, 64, bias=True)
        layer.qweight, layer.scales = quantized, scales.to(torch.bfloat16)
        layer.bias = torch.nn.Parameter(bias.to(torch.bfloat16))
        layers.append(layer)
    fused = FusedLinear(layers)
    assert fused.kernel == "int8" and fused.int8 is None and fused.packed.weight.dtype == torch.int8
    hidden = torch.randn(3, 48).to(torch.bfloat16)
    with torch.inference_mode():
        theirs = torch.cat([layer(hidden) for layer in layers], dim=1)
    torch.testing.assert_close(fused(hidden).float(), theirs.float(), rtol=2e-2, atol=2e-2)


def test_weights_moved_onto_huge_pages_give_the_same_results(kernels):
    """The serving step moves every packed weight into one mapping advised for 2 MB pages
    (cpukernels.place_on_huge_pages); this kernel's layout moves as the AVX512 ones do."""
    import torch

    if not cpukernels._huge_pages_on():
        pytest.skip("transparent huge pages are off in this kernel")
    packed = [kernels.pack(*_int8(2048, 1536, seed=seed)) for seed in (1, 2)]  # 3 MB each
    hidden = torch.randn(3, 1536).to(torch.bfloat16)
    before = [item(hidden, threads=2) for item in packed]
    addresses = [item.weight.data_ptr() for item in packed]
    assert cpukernels.place_on_huge_pages(packed)
    assert [item.weight.data_ptr() for item in packed] != addresses
    assert packed[0].weight.data_ptr() % cpukernels.HUGE_PAGE == 0
    for old, item in zip(before, packed):
        assert torch.equal(old, item(hidden, threads=2))
