"""Next-token choice for a whole batch at once, on the model's device.

Per-row temperature and top_p are tensors; each request has its own torch.Generator on the
logits' device (a seed gives the same text alone or in a batch, because a row's noise depends
only on its own generator). Sampling uses the exponential race (argmax of p / E with E ~ Exp(1)),
which draws from p exactly and needs one noise draw per row instead of a multinomial per row.
"""

from __future__ import annotations

from typing import Any


def make_generator(seed: int | None, device: Any) -> Any:
    """A generator on `device` (a CPU generator cannot drive CUDA sampling). Raises for a seed
    torch refuses; the caller fails that request alone."""
    import torch

    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def choose_tokens(logits: Any, temperature: Any, top_p: Any, generators: list[Any],
                  any_sampled: bool, any_top_p: bool) -> tuple[Any, Any]:
    """(tokens (n,), failed (n,) bool or None). Rows with temperature <= 0 take the argmax.
    A row whose distribution has no mass (top_p <= 0, non-finite logits) is marked failed."""
    import torch

    greedy_tokens = logits.argmax(dim=-1)
    if not any_sampled:
        return greedy_tokens, None
    greedy = temperature <= 0
    scaled = logits.float() / temperature.clamp(min=1e-5)[:, None]
    probabilities = torch.softmax(scaled, dim=-1)
    if any_top_p:
        probabilities = _top_p(probabilities, top_p)
    noise = torch.empty_like(probabilities)
    for row, generator in enumerate(generators):
        if generator is not None:
            noise[row].exponential_(generator=generator)
        else:
            noise[row].fill_(1.0)  # a greedy or idle row: its sample is not used
    sampled = (probabilities / noise).argmax(dim=-1)
    failed = ~(probabilities.sum(dim=-1) > 0) & ~greedy  # NaN compares False: failed too
    return torch.where(greedy, greedy_tokens, sampled), failed


def _top_p(probabilities: Any, top_p: Any) -> Any:
    """Keep each row's smallest prefix (by probability) whose mass reaches its top_p."""
    import torch

    ordered, order = probabilities.sort(dim=-1, descending=True)
    outside = ordered.cumsum(dim=-1) - ordered > top_p[:, None]
    ordered = ordered.masked_fill(outside, 0.0)
    return torch.zeros_like(probabilities).scatter_(-1, order, ordered)
