"""The evidence: perplexity on held-out text, decode speed, time to first token, size on disk,
peak memory while generating, parameter count. Parent and result are measured the same way, in
the same process, one after the other, so their ratios are comparable even on a shared machine.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_EVAL_TEXT = Path(__file__).resolve().parent.parent / "data" / "eval.txt"
DECODE_PROMPT = "The history of the postal service"


@dataclass(frozen=True)
class EvalSettings:
    eval_file: Path = DEFAULT_EVAL_TEXT
    window_tokens: int = 512
    decode_tokens: int = 32
    batch_size: int = 1
    threads: int | None = None


@dataclass(frozen=True)
class ModelMetrics:
    perplexity: float
    decode_tokens_per_s: float
    ttft_s: float
    size_bytes: int
    peak_memory_bytes: int
    weights_memory_bytes: int
    param_count: int
    linear_weight_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def perplexity(model, tokenizer, text: str, window_tokens: int = 512) -> float:
    """exp(mean next-token loss) over consecutive non-overlapping windows of the text."""
    import torch

    token_ids = tokenizer(text, return_tensors="pt").input_ids[0]
    total_loss, counted = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(token_ids) - 1, window_tokens):
            chunk = token_ids[start:start + window_tokens + 1].unsqueeze(0)
            if chunk.shape[1] < 2:
                break
            logits = model(chunk[:, :-1]).logits.float()
            total_loss += torch.nn.functional.cross_entropy(
                logits[0], chunk[0, 1:], reduction="sum").item()
            counted += chunk.shape[1] - 1
    if counted == 0:
        raise ValueError("evaluation text is too short to measure perplexity")
    return math.exp(total_loss / counted)


def _generate(model, inputs: dict, new_tokens: int) -> float:
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=_pad_id(model))
    return time.perf_counter() - started


def _pad_id(model) -> int | None:
    config = model.generation_config
    eos = config.eos_token_id
    return config.pad_token_id if config.pad_token_id is not None else (
        eos[0] if isinstance(eos, list) else eos)


def decode_speed(model, tokenizer, batch_size: int = 1,
                 new_tokens: int = 32) -> tuple[float, float]:
    """(generated tokens/s over the decode phase, seconds to first token). Warmed up first."""
    inputs = tokenizer([DECODE_PROMPT] * batch_size, return_tensors="pt")
    for _ in range(2):  # the first calls in a process pay one-time costs
        _generate(model, inputs, 2)
    ttft = min(_generate(model, inputs, 1) for _ in range(2))
    total = min(_generate(model, inputs, new_tokens) for _ in range(2))
    decode_time = max(total - ttft, 1e-9)
    return batch_size * (new_tokens - 1) / decode_time, ttft


class _RssSampler:
    """Samples this process's RSS every few ms: peak growth while generating."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process(os.getpid())
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> "_RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def unique_tensors(model) -> list:
    seen, tensors = set(), []
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors.append(tensor)
    return tensors


def param_count(model) -> int:
    """Elements of the stored weights (an int8 element counts once), tied tensors once."""
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        if not hasattr(tensor, "data_ptr"):  # packed quantized params carry dtypes and tuples
            continue
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel()
    return total


def linear_weight_bytes(model) -> int:
    """Bytes of the decoder's linear layers (the embedding and a head tied to it excluded)."""
    import torch

    from engine.compression.int8 import Int8Linear

    total = 0
    for name, module in model.named_modules():
        if name.endswith("lm_head") or name == "lm_head":
            continue
        if isinstance(module, torch.nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        elif isinstance(module, Int8Linear):
            total += module.qweight.numel() + module.scales.numel() * module.scales.element_size()
    return total


def measure(model, tokenizer, directory: Path, settings: EvalSettings) -> ModelMetrics:
    import torch

    from engine.compression.storage import directory_bytes

    if settings.threads:
        torch.set_num_threads(settings.threads)
    text = Path(settings.eval_file).read_text()
    ppl = perplexity(model, tokenizer, text, settings.window_tokens)
    with _RssSampler() as sampler:
        speed, ttft = decode_speed(model, tokenizer, settings.batch_size, settings.decode_tokens)
    weights_bytes = sum(t.numel() * t.element_size() for t in unique_tensors(model))
    return ModelMetrics(
        perplexity=round(ppl, 4), decode_tokens_per_s=round(speed, 2), ttft_s=round(ttft, 4),
        size_bytes=directory_bytes(directory), weights_memory_bytes=weights_bytes,
        peak_memory_bytes=weights_bytes + max(0, sampler.peak - sampler.baseline),
        param_count=param_count(model), linear_weight_bytes=linear_weight_bytes(model))


def compare(parent: ModelMetrics, result: ModelMetrics, max_ppl_increase_pct: float) -> dict[str, Any]:
    """Side by side with ratios, and the verdict the registry status follows."""
    def ratio(new: float, old: float) -> float | None:
        return round(new / old, 4) if old else None

    ppl_change = 100.0 * (result.perplexity - parent.perplexity) / parent.perplexity
    rejected = ppl_change > max_ppl_increase_pct
    return {
        "parent": parent.to_dict(), "result": result.to_dict(),
        "change": {
            "perplexity_pct": round(ppl_change, 2),
            "decode_speedup": ratio(result.decode_tokens_per_s, parent.decode_tokens_per_s),
            "ttft_ratio": ratio(result.ttft_s, parent.ttft_s),
            "size_ratio": ratio(result.size_bytes, parent.size_bytes),
            "peak_memory_ratio": ratio(result.peak_memory_bytes, parent.peak_memory_bytes),
            "param_ratio": ratio(result.param_count, parent.param_count),
            "linear_weight_ratio": ratio(result.linear_weight_bytes, parent.linear_weight_bytes),
        },
        "max_ppl_increase_pct": max_ppl_increase_pct,
        "verdict": "rejected" if rejected else "accepted",
        "verdict_reason": (f"perplexity {ppl_change:+.1f}% exceeds the allowed "
                           f"{max_ppl_increase_pct:g}%" if rejected else
                           f"perplexity {ppl_change:+.1f}% within {max_ppl_increase_pct:g}%"),
    }
