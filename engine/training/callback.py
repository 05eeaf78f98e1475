"""The TrainerCallback that turns Trainer logs into the job's events, and stops a diverged run."""

from __future__ import annotations

import math
import time
from typing import Any

from transformers import TrainerCallback

from engine.jobs import JobContext


class TrainingDiverged(Exception):
    """The loss (or the gradient norm) became NaN or infinite."""


class JobEventsCallback(TrainerCallback):
    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.started_at = time.monotonic()
        self.cpu_started = time.process_time()
        self.start_step = 0
        self.start_tokens = 0
        self.steps_this_rank = 0

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - Trainer's API
        self.started_at = time.monotonic()
        self.cpu_started = time.process_time()
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen or 0
        self.context.emit("train_begin", step=state.global_step, max_steps=state.max_steps,
                          resumed_from_step=state.global_step or None,
                          world_size=args.world_size)

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.steps_this_rank += 1
        if self.context.cancelled():
            control.should_training_stop = True  # SIGTERM normally gets here first

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        logs = dict(logs or {})
        if "loss" in logs or "grad_norm" in logs:
            _check_finite(logs, state.global_step)
            self.context.emit("progress", **self._progress(args, state, logs))
        if "eval_loss" in logs:
            self._emit_eval(state, logs)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
        metrics = metrics or {}
        loss = metrics.get("eval_loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"eval loss became {loss} at step {state.global_step}")

    def _emit_eval(self, state: Any, logs: dict[str, Any]) -> None:
        loss = float(logs["eval_loss"])
        self.context.emit("eval", step=state.global_step, epoch=state.epoch, eval_loss=loss,
                          perplexity=_perplexity(loss))

    def _progress(self, args: Any, state: Any, logs: dict[str, Any]) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started_at
        steps_done = state.global_step - self.start_step
        tokens = (state.num_input_tokens_seen or 0) - self.start_tokens
        samples = steps_done * args.per_device_train_batch_size * args.gradient_accumulation_steps \
            * args.world_size
        seconds_per_step = elapsed / steps_done if steps_done else None
        remaining = max(state.max_steps - state.global_step, 0)
        return {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                "loss": _number(logs.get("loss")), "learning_rate": _number(logs.get("learning_rate")),
                "grad_norm": _number(logs.get("grad_norm")),
                "tokens_per_s": tokens / elapsed if elapsed > 0 and tokens else None,
                "samples_per_s": samples / elapsed if elapsed > 0 else None,
                "tokens_seen": state.num_input_tokens_seen, "elapsed_s": elapsed,
                # CPU seconds of this process: throughput per CPU-second survives a busy machine
                "cpu_s": time.process_time() - self.cpu_started,
                "eta_s": remaining * seconds_per_step if seconds_per_step else None}


def _check_finite(logs: dict[str, Any], step: int) -> None:
    for key in ("loss", "grad_norm"):
        value = logs.get(key)
        if value is not None and not math.isfinite(float(value)):
            raise TrainingDiverged(f"{key.replace('_', ' ')} became {float(value)} at step {step}")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")
