"""All linears of one SmolLM2-135M serving step (30 layers' fused qkv, o, gate_up, down and the
head), on every core, through each kernel the serving step could use on a CPU: modeldeck's own
(engine/serving/cpukernels.py) on bf16 and on int8 weights (its AVX2 GEMMs on a CPU with AVX2 but
no AVX512-BF16), oneDNN's prepacked bf16 (what vLLM's CPU build uses; where this torch has no oneDNN
bf16 linear, `F.linear` in bf16, what the step runs then) and torch's int8 weight-only
`_weight_int8pack_mm`.

    PYTHONPATH=$PWD .venv/bin/python bench/cpu_gemm.py [--rows 1,4,8,16,64] [--rounds 3]

Distinct weights per layer (272 MB in bf16), so each call streams its weights from memory as a
real step does. Prints the median of interleaved rounds per row count and each kernel's ratio
against the bf16 baseline measured in the same run (> 1: faster than it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HIDDEN, INTERMEDIATE, VOCAB, LAYERS, KV = 576, 1536, 49152, 30, 192  # SmolLM2-135M
SHAPES = [(HIDDEN + 2 * KV, HIDDEN), (HIDDEN, HIDDEN), (2 * INTERMEDIATE, HIDDEN),
          (HIDDEN, INTERMEDIATE)] * LAYERS + [(VOCAB, HIDDEN)]


def build(threads: int) -> tuple[dict[str, Callable[[int], Any]], str]:
    """The kernels this machine has, and the name of the bf16 one the serving step would use
    (every ratio is against it)."""
    import torch

    from engine.serving.cpukernels import load_gemm
    from engine.serving.linears import _onednn_usable

    gemm, reason = load_gemm()
    if gemm is None:
        sys.exit(f"modeldeck's kernels are not available here: {reason}")
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=generator).mul_(0.02).to(torch.bfloat16) for o, i in SHAPES]
    scales = [w.float().abs().amax(1) / 127 for w in weights]
    quantized = [torch.round(w.float() / s[:, None]).to(torch.int8) for w, s in zip(weights, scales)]
    ours_bf16 = [gemm.pack(w) for w in weights]
    ours_int8 = [gemm.pack(q, s) for q, s in zip(quantized, scales)]
    torch_scales = [s.to(torch.bfloat16) for s in scales]
    inputs: dict[tuple[int, int], Any] = {}

    def hidden(rows: int, features: int) -> Any:
        return inputs.setdefault((rows, features), torch.randn(rows, features).to(torch.bfloat16))

    def on_every_core(run: Callable[[int], Any]) -> Callable[[int], Any]:
        def timed(rows: int) -> Any:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return run(rows)
            finally:
                torch.set_num_threads(before)
        return timed

    kernels: dict[str, Callable[[int], Any]] = {}
    kernels["modeldeck bf16"] = lambda rows: [p(hidden(rows, p.in_features), threads)
                                              for p in ours_bf16]
    kernels["modeldeck int8"] = lambda rows: [p(hidden(rows, p.in_features), threads)
                                              for p in ours_int8]
    if _onednn_usable(torch.bfloat16):
        baseline = "oneDNN bf16"
        onednn = [torch.ops.mkldnn._reorder_linear_weight(w, 8) for w in weights]
        kernels[baseline] = on_every_core(lambda rows: [torch.ops.mkldnn._linear_pointwise(
            hidden(rows, i), w, None, "none", [], "") for (_, i), w in zip(SHAPES, onednn)])
    else:  # this CPU's torch has no oneDNN bf16 linear: the step runs F.linear
        baseline = "F.linear bf16"
        kernels[baseline] = on_every_core(lambda rows: [torch.nn.functional.linear(
            hidden(rows, i), w) for (_, i), w in zip(SHAPES, weights)])
    kernels["torch int8"] = on_every_core(lambda rows: [torch._weight_int8pack_mm(
        hidden(rows, i), q, s) for (_, i), q, s in zip(SHAPES, quantized, torch_scales)])
    return kernels, baseline


def seconds(run: Callable[[int], Any], rows: int, repeats: int) -> float:
    run(rows)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(rows)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1,4,8,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # as the server runs: the GEMMs alone get every core
    threads = len(os.sched_getaffinity(0))
    kernels, baseline_name = build(threads)
    print(f"all linears of a SmolLM2-135M step ({len(SHAPES)} GEMMs) on {threads} threads; "
          f"median ms of {args.rounds} interleaved rounds; ratio = {baseline_name} / kernel")
    for rows in (int(r) for r in args.rows.split(",")):
        repeats = 9 if rows <= 16 else 3
        times: dict[str, list[float]] = {name: [] for name in kernels}
        for _ in range(args.rounds):
            for name, run in kernels.items():
                times[name].append(seconds(run, rows, repeats))
        median = {name: statistics.median(values) for name, values in times.items()}
        baseline = median[baseline_name]
        cells = "  ".join(f"{name} {value * 1000:6.2f} ({baseline / value:4.2f}x)"
                          for name, value in median.items())
        print(f"rows {rows:3d}: {cells}", flush=True)


if __name__ == "__main__":
    main()
