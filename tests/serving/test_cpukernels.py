"""modeldeck's CPU kernels (engine/serving/cpukernels.py): each GEMM result against an fp32 reference and
against torch's own int8 kernel, at row counts inside one register block and across several,
and the build cached under the deck home. Skipped, with the reason the server would report,
on a CPU without AVX512-BF16 or a machine without a C compiler."""

from __future__ import annotations

import pytest

from engine.serving import cpukernels

ROWS = (1, 3, 8, 9, 17, 40)  # one block of rows, a partial one, and several (8 rows a block)


@pytest.fixture
def gemm(cpu_kernels):  # tests/serving/conftest.py: the kernels, or a skip with the reason
    return cpu_kernels


def _weights(out_features: int, in_features: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.05
    # Outlier rows, as real models have: per-row scales must keep them apart.
    weight[::7] *= 20
    scales = weight.abs().amax(1) / 127
    quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    bias = torch.randn(out_features, generator=generator)
    return weight.to(torch.bfloat16), quantized, scales, bias


@pytest.mark.parametrize("rows", ROWS)
def test_bf16_weights_give_what_an_fp32_matmul_of_the_same_numbers_gives(gemm, rows):
    import torch

    weight, _, _, bias = _weights(96, 72, seed=rows)
    hidden = torch.randn(rows, 72).to(torch.bfloat16)
    reference = hidden.float() @ weight.float().T + bias
    result = gemm.pack(weight, None, bias)(hidden, threads=2)
    assert result.dtype == torch.bfloat16 and result.shape == (rows, 96)
    # Only the final rounding to bf16 differs (fp32 accumulation inside).
    torch.testing.assert_close(result.float(), reference, rtol=8e-3, atol=1e-3)


@pytest.mark.parametrize("rows", ROWS)
def test_int8_weights_match_the_int8_formats_own_kernel(gemm, rows):
    import torch

    _, quantized, scales, _ = _weights(64, 48, seed=100 + rows)
    hidden = torch.randn(rows, 48).to(torch.bfloat16)
    packed = gemm.pack(quantized, scales)
    result = packed(hidden, threads=2)
    dequantized = quantized.float() * scales[:, None]
    torch.testing.assert_close(result.float(), hidden.float() @ dequantized.T, rtol=8e-3, atol=1e-3)
    theirs = torch._weight_int8pack_mm(hidden, quantized, scales.to(torch.bfloat16))
    torch.testing.assert_close(result.float(), theirs.float(), rtol=8e-3, atol=2e-3)
    assert packed.weight.dtype == torch.int8  # int8 stays int8: half the bytes to stream


def test_leading_dimensions_and_thread_counts_do_not_change_the_result(gemm):
    import torch

    weight, _, _, _ = _weights(32, 16, seed=7)
    hidden = torch.randn(2, 5, 16).to(torch.bfloat16)
    packed = gemm.pack(weight)
    one, two = packed(hidden, threads=1), packed(hidden, threads=2)
    assert one.shape == (2, 5, 32)
    assert torch.equal(one, two)
    torch.testing.assert_close(one.float(), (hidden.float() @ weight.float().T), rtol=8e-3, atol=1e-3)


def test_shapes_off_the_blocks_are_refused_so_the_step_falls_back(gemm):
    import torch

    assert not gemm.fits(40, 16) and not gemm.fits(32, 15) and gemm.fits(48, 16)
    with pytest.raises(ValueError, match="does not fit"):
        gemm.pack(torch.zeros(40, 16, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="scales"):
        gemm.pack(torch.zeros(32, 16, dtype=torch.int8))


def test_a_fused_linear_off_the_blocks_runs_onednn_and_says_so(gemm):
    import torch

    from engine.serving.linears import FusedLinear

    odd = torch.nn.Linear(16, 40, bias=False).to(torch.bfloat16)
    even = torch.nn.Linear(16, 48, bias=False).to(torch.bfloat16)
    assert FusedLinear([odd]).kernel is None
    fused = FusedLinear([even])
    assert fused.kernel == "bf16" and fused.weight is None  # no second copy of the weights
    hidden = torch.randn(3, 16).to(torch.bfloat16)
    torch.testing.assert_close(fused(hidden).float(), even(hidden).float(), rtol=8e-3, atol=1e-3)


def test_the_library_is_built_once_under_the_deck_home(gemm, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("MODELDECK_HOME", str(tmp_path))
    compiler = shutil.which("cc") or shutil.which("gcc")
    built = cpukernels._built(compiler)
    assert built.parent == tmp_path / "cache" / "kernels" and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    assert cpukernels._built(compiler) == built and built.stat().st_mtime_ns == stamp
    assert not list(built.parent.glob(".build-*"))  # the staging file was renamed, not left


def test_the_switch_turns_the_kernels_off_with_a_reason(monkeypatch):
    monkeypatch.setenv(cpukernels.SWITCH, "off")
    gemm, reason = cpukernels._load()
    assert gemm is None and reason == "turned off by MODELDECK_CPU_KERNELS"


def test_a_fused_linear_hands_the_kernel_its_gemm_threads(gemm):
    import torch

    from engine.serving.linears import FusedLinear
    from engine.serving.threads import GemmThreads

    linear = torch.nn.Linear(16, 32, bias=True).to(torch.bfloat16)
    seen: list[int] = []
    fused = FusedLinear([linear], threads=GemmThreads(3))
    packed = fused.packed

    def spy(hidden, threads):
        seen.append(threads)
        return packed(hidden, threads)

    fused.packed = spy
    hidden = torch.randn(2, 16).to(torch.bfloat16)
    torch.testing.assert_close(fused(hidden).float(), linear(hidden).float(), rtol=8e-3, atol=1e-3)
    assert seen == [3] and torch.get_num_threads() == fused.base_threads


@pytest.mark.parametrize("group,head_dim,tokens", [(3, 64, 1), (2, 16, 1), (1, 32, 1), (3, 64, 7),
                                                    (2, 16, 5)])
def test_attention_matches_sdpa_over_strided_cache_slots_and_a_mask(gemm, group, head_dim, tokens):
    import torch

    generator = torch.Generator().manual_seed(group * 100 + head_dim + tokens)
    rows, kv_heads, slot_len, length = 5, 2, 40, 23
    heads = kv_heads * group
    # The slot cache's layout: (slots, kv_heads, slot_len + 1, dim), read as a slice of slots
    # and columns, so rows and heads are strided and only each head's keys are contiguous.
    cache_keys = torch.randn(rows + 2, kv_heads, slot_len + 1, head_dim, generator=generator)
    cache_values = torch.randn(rows + 2, kv_heads, slot_len + 1, head_dim, generator=generator)
    keys = cache_keys.to(torch.bfloat16)[1:1 + rows, :, :length]
    values = cache_values.to(torch.bfloat16)[1:1 + rows, :, :length]
    # Queries as the step has them: a slice of a (rows, tokens, q+k heads, dim) projection.
    projected = torch.randn(rows, tokens, heads + kv_heads, head_dim, generator=generator)
    query = projected.to(torch.bfloat16)[:, :, :heads]
    # Row r's token t sees the first 10 + 3r - (tokens - 1 - t) columns: causal, own length.
    ends = (10 + 3 * torch.arange(rows))[:, None] - (tokens - 1 - torch.arange(tokens))[None, :]
    visible = torch.arange(length)[None, None, :] < ends[:, :, None]
    mask = (~visible).to(torch.bfloat16)[:, None] * torch.finfo(torch.bfloat16).min
    scale = head_dim ** -0.5
    ours = gemm.attend(query, keys, values, mask.reshape(rows, tokens, length).float(), scale,
                       threads=2)
    theirs = torch.nn.functional.scaled_dot_product_attention(
        query.transpose(1, 2), keys, values, attn_mask=mask, scale=scale,
        enable_gqa=group > 1).transpose(1, 2).reshape(rows * tokens, heads * head_dim)
    assert ours.shape == (rows * tokens, heads * head_dim)
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=2e-2, atol=2e-2)
    # The mask matters here: without it the answer is far from SDPA's.
    unmasked = gemm.attend(query, keys, values, torch.zeros(rows, tokens, length), scale, threads=2)
    assert (unmasked.float() - theirs.float()).abs().max() > 0.1


def test_no_compiler_and_a_failed_build_each_fall_back_with_a_reason(monkeypatch, tmp_path):
    if not cpukernels._cpu_has("avx2"):
        pytest.skip("this CPU has neither AVX512-BF16 nor AVX2: the compiler is never asked")
    monkeypatch.setenv("MODELDECK_HOME", str(tmp_path))
    monkeypatch.setattr(cpukernels.shutil, "which", lambda name: None)
    assert cpukernels._build_and_load() == (None, "no C compiler to build modeldeck's kernels")
    monkeypatch.undo()
    monkeypatch.setenv("MODELDECK_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails: no library, no exception
    library, reason = cpukernels._build_and_load()
    assert library is None and reason.startswith("modeldeck's kernels did not build: false exited 1")
    assert not list((tmp_path / "cache" / "kernels").glob("*"))  # nothing half-built left


def test_a_library_others_could_have_written_is_rebuilt_not_loaded(gemm, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("MODELDECK_HOME", str(tmp_path))
    compiler = shutil.which("cc") or shutil.which("gcc")
    built = cpukernels._built(compiler)
    planted = b"not a library"
    built.write_bytes(planted)
    built.chmod(0o666)  # world-writable: anyone could have put this here
    assert cpukernels._built(compiler) == built and built.read_bytes() != planted
    assert not built.stat().st_mode & 0o022
    built.parent.chmod(0o777)  # a directory others can write to is not used at all
    try:
        assert cpukernels._built(compiler).parent != built.parent
    finally:
        built.parent.chmod(0o700)


def _mapping_of(address: int) -> tuple[int, tuple[str, ...]]:
    """The start and VmFlags of the mapping in this process that holds `address`."""
    start, flags = None, None
    for line in open("/proc/self/smaps"):
        field = line.split()[0]
        if "-" in field and not field.endswith(":"):
            low, high = (int(value, 16) for value in field.split("-"))
            start = low if low <= address < high else None
        elif field == "VmFlags:" and start is not None:
            return start, tuple(line.split()[1:])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_weights_moved_onto_huge_pages_give_the_same_results_from_one_advised_mapping(gemm):
    import torch

    if not cpukernels._huge_pages_on():
        pytest.skip("transparent huge pages are off in this kernel")
    weight, quantized, scales, bias = _weights(2048, 768, seed=7)  # 3 MB: spans a 2 MB page
    packed = [gemm.pack(weight, None, bias), gemm.pack(quantized, scales), gemm.pack(weight[:96])]
    hidden = torch.randn(5, 768).to(torch.bfloat16)
    before = [item(hidden, threads=2) for item in packed]
    assert cpukernels.place_on_huge_pages(packed)
    after = [item(hidden, threads=2) for item in packed]
    for old, new in zip(before, after):
        assert torch.equal(old, new)
    addresses = [item.weight.data_ptr() for item in packed]
    assert addresses[0] % cpukernels.HUGE_PAGE == 0
    mappings = {_mapping_of(address) for address in addresses}
    assert len(mappings) == 1  # one mapping for them all
    (_, flags), = mappings
    assert "hg" in flags  # advised MADV_HUGEPAGE: the kernel backs it with 2 MB pages


def test_without_huge_pages_the_weights_stay_where_they_are(gemm, monkeypatch, tmp_path):
    import torch

    setting = tmp_path / "enabled"
    setting.write_text("always madvise [never]\n")
    monkeypatch.setattr(cpukernels, "THP_MODE", setting)
    packed = gemm.pack(torch.randn(32, 16).to(torch.bfloat16))
    address = packed.weight.data_ptr()
    assert not cpukernels.place_on_huge_pages([packed])
    assert packed.weight.data_ptr() == address


@pytest.mark.parametrize("int8", [False, True])
def test_a_rows_result_does_not_depend_on_the_rows_beside_it(gemm, int8):
    """Bit for bit, a row gives the same output alone, in a decode batch and in a long prefill
    (the kernels for 1-8 rows and the two-block kernel for 16+ sum in the same order): a
    sequence's text does not change with the batch it runs in."""
    import torch

    weight, quantized, scales, bias = _weights(256, 1536, seed=11)  # long sums: order shows
    packed = gemm.pack(quantized, scales, bias) if int8 else gemm.pack(weight, None, bias)
    hidden = torch.randn(40, 1536).to(torch.bfloat16)
    together = packed(hidden, threads=2)
    for row in (0, 7, 8, 16, 23, 39):
        assert torch.equal(packed(hidden[row:row + 1], threads=2)[0], together[row])
    assert torch.equal(packed(hidden[8:13], threads=1), together[8:13])
