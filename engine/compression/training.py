"""The short training loops compression needs: recovery after pruning, and distillation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

# on_step(step, max_steps, loss) reports progress; it may raise to stop (a cancelled job).
StepCallback = Callable[[int, int, float], None]


def text_batches(tokenizer, text: str, seq_len: int, batch_size: int) -> Iterator[Any]:
    """Endless batches of consecutive token blocks from `text` (wrapping around)."""
    import torch

    token_ids = tokenizer(text, return_tensors="pt").input_ids[0]
    if len(token_ids) < 2:
        raise ValueError("training text is too short")
    seq_len = min(seq_len, len(token_ids))
    blocks = [token_ids[i:i + seq_len] for i in range(0, len(token_ids) - seq_len + 1, seq_len)]
    position = 0
    while True:
        batch = [blocks[(position + i) % len(blocks)] for i in range(batch_size)]
        position += batch_size
        yield torch.stack(batch)


def train_steps(model, batches: Iterator[Any], steps: int, loss_of: Callable[[Any, Any], Any],
                learning_rate: float, on_step: StepCallback,
                after_step: Callable[[], None] | None = None) -> list[float]:
    """AdamW for `steps` steps; `loss_of(model, batch)` gives the loss. Returns the losses."""
    import torch

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    losses = []
    device = next(model.parameters()).device  # batches are made on the CPU
    for step in range(1, steps + 1):
        loss = loss_of(model, next(batches).to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(float(loss.detach()))
        on_step(step, steps, losses[-1])
    model.eval()
    return losses


def causal_lm_loss(model, batch):
    return model(input_ids=batch, labels=batch).loss


def distillation_loss(teacher, temperature: float, alpha: float) -> Callable[[Any, Any], Any]:
    """alpha * KL(teacher || student) at `temperature` (scaled by T^2) + (1-alpha) * CE."""
    import torch
    import torch.nn.functional as functional

    def loss_of(student, batch):
        with torch.no_grad():
            teacher_logits = teacher(input_ids=batch).logits.float()
        output = student(input_ids=batch, labels=batch)
        student_logits = output.logits.float()
        kl = functional.kl_div(
            functional.log_softmax(student_logits / temperature, dim=-1),
            functional.log_softmax(teacher_logits / temperature, dim=-1),
            log_target=True, reduction="batchmean") / student_logits.shape[1]
        return alpha * kl * temperature ** 2 + (1 - alpha) * output.loss

    return loss_of
