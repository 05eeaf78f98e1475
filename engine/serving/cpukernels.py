"""modeldeck's own CPU kernels for the serving step (engine/data/cpu_kernels.c): GEMMs on bf16
or int8 weights and attention for short queries, compiled once per machine with the system C
compiler and called through ctypes.

Why (measured on this project's 2-core AMD EPYC box with AVX512-BF16; all linears of a
SmolLM2-135M step, 30 layers and the head, 2 threads; `bench/cpu_gemm.py`): oneDNN's prepacked
bf16 GEMM, the fastest kernel torch offers here, takes 15.5 / 14.3 / 17.3 ms at 1 / 4 / 8 rows;
these take 10.2 / 10.8 / 16.5 ms on bf16 weights and 6.2 / 8.7 / 12.9 ms on int8 weights
(torch's own int8 weight-only `_weight_int8pack_mm`: 11.4 / 15.9 / 35.6 ms). At 64 rows (a
prefill) both are bound by vdpbf16ps throughput; these take 77.0 ms against oneDNN's 82.3, so
one packed copy serves both. SDPA's flash kernel spent ~114 us a layer on a batch-8 decode
attention that is a few microseconds of work; the attention kernel here takes pieces of up to
modelstep.KERNEL_ATTENTION_TOKENS tokens.

Why ctypes and not a torch C++ extension: the source is plain C, compiles in about a second
(a torch extension takes a minute), and needs no torch headers; a call costs ~2 us against
50-500 us of GEMM. OpenMP threads come from the libgomp torch already loaded (same soname),
so the kernels and torch share one thread pool.

Not available (and the step falls back to oneDNN and SDPA, saying why in `status`): no x86
AVX512-BF16, no C compiler, a build that fails, or MODELDECK_CPU_KERNELS=off (for A/B runs).
On an x86 CPU with AVX2 but no AVX512-BF16, the step's GEMMs (bf16 or int8) still run modeldeck's
own (engine/data/cpu_kernels_avx2.c, `Avx2Kernels`, from the same library).
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data"
SOURCES = (DATA / "cpu_kernels.c", DATA / "cpu_kernels_avx2.c")  # one library: one build, one load
FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC")
SWITCH = "MODELDECK_CPU_KERNELS"  # "off": never use these kernels
BLOCK = 16  # outputs per block: N must be a multiple, K even
HUGE_PAGE = 2 << 20  # x86-64 transparent huge page
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")  # "always [madvise] never"


class CpuKernels:
    """The loaded library: pack a weight once, multiply many times; attend short queries."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._int8, self._bf16 = _gemms(library, "md_int8_gemm", "md_bf16_gemm", None)
        self._attend = library.md_attention
        self._attend.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                 ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                 ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_void_p,
                                 ctypes.c_int]
        self._attend.restype = ctypes.c_int
        pointer, count = ctypes.c_void_p, ctypes.c_int
        self._add_rms_norm = library.md_add_rms_norm
        self._add_rms_norm.argtypes = [pointer, pointer, pointer, pointer, count, count,
                                       ctypes.c_float]
        self._silu_mul = library.md_silu_mul
        self._silu_mul.argtypes = [pointer, pointer, count, count]
        self._rotary = library.md_rotary
        self._rotary.argtypes = [pointer, ctypes.c_long, count, count, count, pointer, pointer]
        self._write_kv = library.md_write_kv
        self._write_kv.argtypes = [pointer, pointer, ctypes.c_long, ctypes.c_long, pointer,
                                   pointer, ctypes.c_long, count, pointer, count, count, count,
                                   count]
        for glue in (self._add_rms_norm, self._silu_mul, self._rotary, self._write_kv):
            glue.restype = None

    @staticmethod
    def fits(out_features: int, in_features: int) -> bool:
        return out_features % BLOCK == 0 and in_features % 2 == 0

    def pack(self, weight: Any, scales: Any | None = None, bias: Any | None = None) -> "PackedWeight":
        """weight: (N, K) bf16, or int8 with `scales` (N) for y = x @ (weight * scales).T."""
        # (N/16, 16, K/2, 2) -> (N/16, K/2, 16, 2): each k pair of 16 rows is one vdpbf16ps operand
        return _pack(self, weight, scales, bias, lambda stored, n, k: stored.reshape(
            n // BLOCK, BLOCK, k // 2, 2).permute(0, 2, 1, 3))

    @staticmethod
    def attends(group: int, head_dim: int) -> bool:
        """Whether the attention kernel takes this head shape (md_attention)."""
        return group <= 16 and head_dim <= 256 and head_dim % 16 == 0

    def attend(self, query: Any, keys: Any, values: Any, mask: Any, scale: float,
               threads: int) -> Any:
        """Grouped-query attention for short queries: query (rows, tokens, heads, dim) bf16
        (each token's heads contiguous) over keys/values (rows, kv_heads, length, dim) bf16
        (views of the slot cache: each head's keys contiguous), mask (rows, tokens, length)
        fp32 additive. Returns (rows * tokens, heads * dim) bf16."""
        import torch

        rows, tokens, heads, dim = query.shape
        kv_heads, length = keys.shape[1], keys.shape[2]
        if query.stride()[2:] != (dim, 1):
            query = query.contiguous()
        for cache in (keys, values):
            if cache.stride()[2:] != (dim, 1) or cache.stride() != keys.stride():
                raise ValueError("keys and values must share strides, each head contiguous")
        output = torch.empty(rows * tokens, heads * dim, dtype=torch.bfloat16)
        failed = self._attend(query.data_ptr(), query.stride(0), query.stride(1), keys.data_ptr(),
                              values.data_ptr(), keys.stride(0), keys.stride(1), mask.data_ptr(),
                              rows, tokens, kv_heads, heads // kv_heads, dim, length, scale,
                              output.data_ptr(), threads)
        if failed:
            raise MemoryError("attention could not allocate its scores")
        return output

    # ---- the glue between a step's GEMMs: one call where torch runs 3-6 small ops ----------

    def add_rms_norm(self, hidden: Any, delta: Any | None, weight: Any, eps: float) -> Any:
        """hidden (rows, dim) bf16 contiguous += delta, in place; returns weight * RMSNorm of
        the sum (transformers' Llama RMSNorm, rounded as its bf16 ops round)."""
        import torch

        rows, dim = hidden.shape
        output = torch.empty(rows, dim, dtype=torch.bfloat16)
        self._add_rms_norm(hidden.data_ptr(), delta.data_ptr() if delta is not None else None,
                           weight.data_ptr(), output.data_ptr(), rows, dim, eps)
        return output

    def silu_mul(self, gate_up: Any) -> Any:
        """silu(gate) * up of a (rows, 2 * inter) bf16 contiguous gate/up GEMM output."""
        import torch

        rows, width = gate_up.shape
        output = torch.empty(rows, width // 2, dtype=torch.bfloat16)
        self._silu_mul(gate_up.data_ptr(), output.data_ptr(), rows, width // 2)
        return output

    def rotate(self, heads: Any, count: int, cos: Any, sin: Any) -> None:
        """Rotary embedding in place on the first `count` heads of heads (tokens, >= count,
        dim) bf16 (each token's heads contiguous); cos, sin (tokens, dim) bf16 contiguous,
        sin's first half negated."""
        tokens, _, dim = heads.shape
        self._rotary(heads.data_ptr(), heads.stride(0), tokens, count, dim, cos.data_ptr(),
                     sin.data_ptr())

    def write_kv(self, keys: Any, values: Any, first: int, columns: Any, key: Any,
                 value: Any) -> None:
        """Token (r, t) of key/value (rows * q, heads, dim) bf16 (each token's heads
        contiguous, both with one token stride) into slot first + r, column columns[r, t]
        (int64, contiguous) of keys/values (slots, heads, columns, dim) bf16 contiguous."""
        rows, q = columns.shape
        heads, dim = key.shape[1], key.shape[2]
        self._write_kv(keys.data_ptr(), values.data_ptr(), keys.stride(0), keys.stride(1),
                       key.data_ptr(), value.data_ptr(), key.stride(0), first,
                       columns.data_ptr(), rows, q, heads, dim)


class Avx2Kernels:
    """modeldeck's GEMMs on an x86 CPU with AVX2 and FMA but no AVX512-BF16, on int8 or bf16
    weights (engine/data/cpu_kernels_avx2.c); attention and the glue stay torch's there.

    Why (measured on this project's 2-core AMD EPYC with AVX2 only, all linears of a SmolLM2-135M
    step, 2 threads; `bench/cpu_gemm.py`): int8 11.7 / 20.2 / 40.1 / 186 ms at 1 / 4 / 8 / 64
    rows and bf16 15.7 / 29.1 / 44.5 / 223, against 19.6 / 33.2 / 52.7 / 368 for torch's int8
    weight-only GEMM and 23.8 / 77.7 / 146 / 1041 for bf16 through `F.linear` (torch has no
    oneDNN bf16 there, and emulates it): before these an int8 version was no faster than bf16
    at one row, and bf16 steps grew with every row.
    The bound at one row is widening the weights to fp32 (a shuffle and a convert per 8
    weights), not memory: 9-11 GB/s of int8 weights a core where the box reads 29 GB/s."""

    def __init__(self, library: ctypes.CDLL) -> None:
        # these return nonzero when x's fp32 copy could not be allocated
        self._int8, self._bf16 = _gemms(library, "md_int8_gemm_avx2", "md_bf16_gemm_avx2",
                                        ctypes.c_int)

    @staticmethod
    def fits(out_features: int, in_features: int) -> bool:
        return out_features % BLOCK == 0 and in_features > 0

    def pack(self, weight: Any, scales: Any | None = None,
             bias: Any | None = None) -> "PackedWeight":
        """weight: (N, K) bf16, or int8 with `scales` (N) for y = x @ (weight * scales).T."""
        # (N/16, 16, K) -> (N/16, K, 16): each k's 16 rows side by side, two 8-lane fp32 vectors
        return _pack(self, weight, scales, bias, lambda stored, n, k: stored.reshape(
            n // BLOCK, BLOCK, k).permute(0, 2, 1))


def _gemms(library: ctypes.CDLL, int8_name: str, bf16_name: str, result: Any) -> tuple[Any, Any]:
    """The library's int8 and bf16 GEMMs, typed: (x, rows, k, weight, n, scale, bias, y,
    threads), each returning `result` (None: void)."""
    functions = (getattr(library, int8_name), getattr(library, bf16_name))
    for function in functions:
        function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                             ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_int]
        function.restype = result
    return functions


def _pack(kernels: "CpuKernels | Avx2Kernels", weight: Any, scales: Any | None, bias: Any | None,
          arrange: Any) -> "PackedWeight":
    """The weight (int8 kept int8, anything else as bf16) in the layout `arrange(stored, N, K)`
    gives, with the kernels' GEMM for its type; ValueError where these kernels cannot take it."""
    import torch

    out_features, in_features = weight.shape
    if not kernels.fits(out_features, in_features):
        raise ValueError(f"a ({out_features}, {in_features}) weight does not fit the blocks")
    int8 = weight.dtype == torch.int8
    if int8 != (scales is not None):
        raise ValueError("int8 weights need their scales; bf16 weights take none")
    stored = weight if int8 else weight.to(torch.bfloat16)
    return PackedWeight(kernels._int8 if int8 else kernels._bf16,
                        arrange(stored, out_features, in_features).contiguous(), out_features,
                        in_features, scales, bias)


class PackedWeight:
    """One weight in its kernel's block layout, callable on (rows, K) bf16 activations."""

    def __init__(self, function: Any, packed: Any, out_features: int, in_features: int,
                 scales: Any | None, bias: Any | None) -> None:
        import torch

        self.out_features, self.in_features = out_features, in_features
        self.weight = packed
        self.int8 = packed.dtype == torch.int8
        self.scales = scales.float().contiguous() if scales is not None else None
        self.bias = bias.float().contiguous() if bias is not None else None
        self._function = function
        self._pointers = (self.weight.data_ptr(),
                          self.scales.data_ptr() if self.scales is not None else None,
                          self.bias.data_ptr() if self.bias is not None else None)

    def place(self, storage: Any) -> None:
        """Move the packed weight into `storage` (same size, bytes); the old copy is freed."""
        storage.copy_(self.weight.view(-1).view(storage.dtype))
        self.weight = storage.view(self.weight.dtype).view(self.weight.shape)
        self._pointers = (self.weight.data_ptr(), *self._pointers[1:])

    def __call__(self, hidden: Any, threads: int) -> Any:
        import torch

        flat = hidden.reshape(-1, self.in_features)
        if flat.dtype != torch.bfloat16:
            flat = flat.to(torch.bfloat16)
        flat = flat.contiguous()
        output = torch.empty(flat.shape[0], self.out_features, dtype=torch.bfloat16)
        weight, scales, bias = self._pointers
        if self._function(flat.data_ptr(), flat.shape[0], self.in_features, weight,
                          self.out_features, scales, bias, output.data_ptr(), threads):
            raise MemoryError("the GEMM could not allocate its copy of the activations")
        return output.view(*hidden.shape[:-1], self.out_features)


def place_on_huge_pages(packed: list[PackedWeight]) -> bool:
    """Move a model's packed weights into one mapping advised for transparent huge pages; False
    where the platform has no MADV_HUGEPAGE (the weights stay where they are).

    Why: a decode step streams every weight once (272 MB for SmolLM2-135M), and on 4 KB pages
    that is 66,000 page walks a step; the hardware prefetchers also stop at each page's end.
    Measured here (2 cores, THP `madvise`), all linears of a SmolLM2 step on 2 MB pages against
    the same kernels on ordinary pages: 1.07-1.10x faster at 1-4 rows, 1.13x at 8 rows on two
    threads, 1.16-1.23x on one; a 64-row prefill even. False (nothing moved) where THP is off."""
    import torch

    if not packed or not hasattr(mmap, "MADV_HUGEPAGE") or not _huge_pages_on():
        return False
    sizes = [_aligned(item.weight.nbytes, 64) for item in packed]
    length = _aligned(sum(sizes), HUGE_PAGE) + HUGE_PAGE  # room to start on a 2 MB boundary
    mapping = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping.madvise(mmap.MADV_HUGEPAGE)
    arena = torch.frombuffer(mapping, dtype=torch.uint8)  # keeps the mapping alive while used
    offset = (-arena.data_ptr()) % HUGE_PAGE
    for item, size in zip(packed, sizes):
        item.place(arena[offset:offset + item.weight.nbytes])
        offset += size
    return True


def _huge_pages_on() -> bool:
    try:
        return "[never]" not in THP_MODE.read_text()
    except OSError:
        return False  # no THP in this kernel


def _aligned(size: int, boundary: int) -> int:
    return -(-size // boundary) * boundary


_LOADED: dict[str, Any] = {}  # each loader's answer, once per process


def load() -> tuple[CpuKernels | None, str]:
    """The full set (GEMMs, attention, glue; AVX512-BF16), built and loaded once per process,
    or None and why not."""
    if "kernels" not in _LOADED:
        _LOADED["kernels"] = _load()
    return _LOADED["kernels"]


def load_gemm() -> tuple[CpuKernels | Avx2Kernels | None, str]:
    """Kernels for the step's GEMMs alone: the full set where it runs, else the AVX2 GEMMs, else
    None and why not."""
    if "gemm" not in _LOADED:
        _LOADED["gemm"] = _load_gemm()
    return _LOADED["gemm"]


def _load() -> tuple[CpuKernels | None, str]:
    if _switched_off():
        return None, f"turned off by {SWITCH}"
    library, why = _library_for(("avx512f", "avx512bw", "avx512_bf16"), "md_supported",
                                "this CPU has no AVX512-BF16")
    return (CpuKernels(library), "modeldeck AVX512-BF16 kernels") if library else (None, why)


def _load_gemm() -> tuple[CpuKernels | Avx2Kernels | None, str]:
    kernels, why = load()
    if kernels is not None or _switched_off():
        return kernels, why
    library, why = _library_for(("avx2", "fma"), "md_avx2_supported",
                                "this CPU has neither AVX512-BF16 nor AVX2")
    return (Avx2Kernels(library), "modeldeck AVX2 kernels") if library else (None, why)


def _library_for(flags: tuple[str, ...], check: str,
                 missing: str) -> tuple[ctypes.CDLL | None, str]:
    """The library where the CPU has `flags` (/proc/cpuinfo first: nothing is compiled to learn
    it has not, then the library's own `check`), else None and why not."""
    if not _cpu_has(*flags):
        return None, missing
    library, why = _library()
    if library is None:
        return None, why
    return (library, "") if getattr(library, check)() else (None, missing)


def _switched_off() -> bool:
    return os.environ.get(SWITCH, "").lower() in ("off", "0", "no", "false")


def _library() -> tuple[ctypes.CDLL | None, str]:
    """The compiled library (both sources), built and loaded once per process."""
    if "library" not in _LOADED:
        _LOADED["library"] = _build_and_load()
    return _LOADED["library"]


def _build_and_load() -> tuple[ctypes.CDLL | None, str]:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler to build modeldeck's kernels"
    try:
        return ctypes.CDLL(str(_built(compiler))), ""
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"modeldeck's kernels did not build: {' '.join(str(error).split())[:120]}"


def _cpu_has(*flags: str) -> bool:
    """Whether /proc/cpuinfo lists every flag, on an x86-64 machine (elsewhere: no)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        listed = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: let the library's own check decide
    return all(f" {flag}" in listed for flag in flags)


def _built(compiler: str) -> Path:
    """The compiled library, cached under the deck home by source, compiler and flags."""
    import torch  # noqa: F401  (its libgomp must be loaded first: the library links to that soname)

    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES)
                            + version.encode() + " ".join(FLAGS).encode())
    name = f"cpu_kernels-{digest.hexdigest()[:16]}.so"
    for directory in _cache_directories():
        library = directory / name
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _ours(directory):
                continue  # someone else could have planted a library there: never load it
            if library.exists() and _ours(library):
                return library
            handle, name_staged = tempfile.mkstemp(dir=directory, prefix=".build-", suffix=".so")
            os.close(handle)  # the compiler writes the file by its name
            staging = Path(name_staged)
        except OSError:
            continue  # a read-only deck home: build in the temporary directory
        try:
            command = [compiler, *FLAGS, "-o", str(staging), *map(str, SOURCES), "-lm"]
            built = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if built.returncode != 0:
                last = (built.stderr.strip().splitlines() or ["no output"])[-1]
                raise OSError(f"{Path(compiler).name} exited {built.returncode}: {last}")
            os.replace(staging, library)  # atomic: a concurrent build finds a whole file
        finally:
            staging.unlink(missing_ok=True)
        return library
    raise OSError("no writable directory to build into")


def _ours(path: Path) -> bool:
    """Owned by this user and writable by nobody else: a library loaded from here runs as us."""
    status = path.stat()
    return status.st_uid == os.getuid() and not status.st_mode & 0o022


def _cache_directories() -> list[Path]:
    from engine.paths import deck_home

    return [deck_home() / "cache" / "kernels",
            Path(tempfile.gettempdir()) / f"modeldeck-kernels-{os.getuid()}"]
