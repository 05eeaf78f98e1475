"""The evidence: perplexity on held-out text, decode speed, time to first token, size on disk,
peak memory while generating, parameter count. Parent and result are measured the same way, in
the same process. Speed is measured in interleaved rounds (parent, result, parent, result, ...
on the same prompt; medians), because a machine shared with other work slows whichever model
happens to run during a burst: measured one after the other, int8 once read 0.38x its parent.
`judge_speed` marks the figure unreliable when the rounds disagree or the machine is loaded.
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
    speed_rounds: int = 5


# Per-round result/parent speed ratios further apart than this (relative to their median) do
# not describe one speed; a 1-minute load average per core above MAX_LOAD_PER_CORE means other
# work competed for the cores while we timed.
MAX_RATIO_SPREAD = 0.25
MAX_LOAD_PER_CORE = 1.0


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

    token_ids = tokenizer(text, return_tensors="pt").input_ids[0].to(device_of(model))
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


def device_of(model) -> Any:
    """Where the model's weights are: its inputs go there."""
    return next(model.parameters()).device


def _synchronize(device: Any) -> None:
    """A GPU runs ahead of the host: wait for it, so a timer measures the work, not its launch."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate(model, inputs: dict, new_tokens: int) -> float:
    import torch

    device = device_of(model)
    inputs = {name: value.to(device) for name, value in inputs.items()}
    _synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=_pad_id(model))
    _synchronize(device)
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


def _round(model, inputs: dict, new_tokens: int) -> tuple[float, float]:
    """One timed round: (decode tokens/s, seconds to first token)."""
    ttft = _generate(model, inputs, 1)
    total = _generate(model, inputs, new_tokens)
    return inputs["input_ids"].shape[0] * (new_tokens - 1) / max(total - ttft, 1e-9), ttft


def interleaved_speed(parent, result, tokenizer, settings: EvalSettings) -> dict[str, list[float]]:
    """Parent and result alternate round by round on the same prompts, after warming both up,
    so a burst of outside load hits both rather than whichever ran then."""
    inputs = tokenizer([DECODE_PROMPT] * settings.batch_size, return_tensors="pt")
    for model in (parent, result, parent, result):
        _generate(model, inputs, 2)
    rounds: dict[str, list[float]] = {"parent": [], "result": [], "parent_ttft": [], "result_ttft": []}
    for index in range(max(settings.speed_rounds, 1)):
        order = (("parent", parent), ("result", result))
        for name, model in order if index % 2 == 0 else reversed(order):  # neither always first
            rate, ttft = _round(model, inputs, settings.decode_tokens)
            rounds[name].append(rate)
            rounds[f"{name}_ttft"].append(ttft)
    return rounds


def load_per_core() -> float | None:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return None


def judge_speed(parent_rates: list[float], result_rates: list[float], load: float | None,
                max_spread: float = MAX_RATIO_SPREAD,
                max_load: float = MAX_LOAD_PER_CORE) -> dict[str, Any]:
    """Medians of interleaved rounds and whether to believe them: the per-round result/parent
    ratios must agree within max_spread, and the load per core must stay under max_load."""
    import statistics

    pairs = [(p, r) for p, r in zip(parent_rates, result_rates) if p > 0 and r > 0]
    ratios = [r / p for p, r in pairs]
    parent_median = statistics.median(parent_rates) if parent_rates else 0.0
    result_median = statistics.median(result_rates) if result_rates else 0.0
    spread = ((max(ratios) - min(ratios)) / statistics.median(ratios)) if ratios else None
    reasons = []
    if len(ratios) < 2:
        reasons.append(f"{len(ratios)} usable round(s), cannot tell whether they agree")
    elif spread is not None and spread > max_spread:
        reasons.append(f"rounds disagree: result/parent ranged {min(ratios):.2f}x to "
                       f"{max(ratios):.2f}x ({spread:.0%} apart, limit {max_spread:.0%})")
    if load is not None and load > max_load:
        reasons.append(f"machine busy: load average {load:.2f} per core (limit {max_load:g})")
    note = ("speed figures unreliable: " + "; ".join(reasons) if reasons else
            f"speed from {len(ratios)} interleaved rounds, agreeing within {spread:.0%}")
    return {"rounds": len(ratios), "parent_tokens_per_s": [round(v, 2) for v in parent_rates],
            "result_tokens_per_s": [round(v, 2) for v in result_rates],
            "round_ratios": [round(v, 4) for v in ratios],
            "speedup": round(result_median / parent_median, 4) if parent_median else None,
            "ratio_spread": round(spread, 4) if spread is not None else None,
            "load_per_core": round(load, 2) if load is not None else None,
            "reliable": not reasons, "note": note}


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


class _PeakMemory:
    """Peak memory growth while generating, on the model's device: the process's RSS on the
    CPU, the CUDA allocator's peak on a GPU (the weights sit there, not in RSS)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.growth = 0
        self._rss = _RssSampler() if device.type != "cuda" else None

    def __enter__(self) -> "_PeakMemory":
        if self._rss is not None:
            self._rss.__enter__()
        else:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *_: Any) -> None:
        if self._rss is not None:
            self._rss.__exit__()
            self.growth = max(0, self._rss.peak - self._rss.baseline)
        else:
            import torch

            self.growth = max(0, torch.cuda.max_memory_allocated(self.device) - self._baseline)


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

    from engine.modelio.int8 import Int8Linear

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

    from engine.modelio.storage import directory_bytes

    if settings.threads:
        torch.set_num_threads(settings.threads)
    text = Path(settings.eval_file).read_text()
    ppl = perplexity(model, tokenizer, text, settings.window_tokens)
    with _PeakMemory(device_of(model)) as sampler:
        speed, ttft = decode_speed(model, tokenizer, settings.batch_size, settings.decode_tokens)
    weights_bytes = sum(t.numel() * t.element_size() for t in unique_tensors(model))
    return ModelMetrics(
        perplexity=round(ppl, 4), decode_tokens_per_s=round(speed, 2), ttft_s=round(ttft, 4),
        size_bytes=directory_bytes(directory), weights_memory_bytes=weights_bytes,
        peak_memory_bytes=weights_bytes + sampler.growth,
        param_count=param_count(model), linear_weight_bytes=linear_weight_bytes(model))


def compare(parent: ModelMetrics, result: ModelMetrics, max_ppl_increase_pct: float,
            speed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Side by side with ratios, and the verdict the registry status follows; `speed` is
    judge_speed's judgement, kept in the report (and said in the verdict line when unreliable)."""
    def ratio(new: float, old: float) -> float | None:
        return round(new / old, 4) if old else None

    ppl_change = 100.0 * (result.perplexity - parent.perplexity) / parent.perplexity
    rejected = ppl_change > max_ppl_increase_pct
    reason = (f"perplexity {ppl_change:+.1f}% exceeds the allowed {max_ppl_increase_pct:g}%"
              if rejected else f"perplexity {ppl_change:+.1f}% within {max_ppl_increase_pct:g}%")
    if speed is not None and not speed["reliable"]:
        reason += f"; {speed['note']}"
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
        "verdict_reason": reason,
        "speed": speed,
        "speed_reliable": None if speed is None else speed["reliable"],
    }
