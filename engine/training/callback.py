"""The TrainerCallback that turns Trainer logs into the job's events, takes the job's stop and
checkpoint requests, and stops a diverged run. Fine-tuning, pruning recovery and distillation
all train through it (and through the Trainer's own TensorBoard callback, `tensorboard_callback`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from engine.jobs import JobContext

Emit = Callable[..., None]  # emit(event_type, **fields)


class TrainingDiverged(Exception):
    """The loss (or the gradient norm) became NaN or infinite."""


class JobEventsCallback(TrainerCallback):
    """`extra` fields ride on every progress event (compression's `phase`)."""

    def __init__(self, emit: Emit, cancelled: Callable[[], bool] = lambda: False,
                 take_requests: Callable[[], set[str]] = set, **extra: Any) -> None:
        self.emit, self.cancelled, self.take_requests = emit, cancelled, take_requests
        self.extra = extra
        self.started_at = self.last_log_at = time.monotonic()
        self.cpu_started = time.process_time()
        self.start_step = self.last_log_step = 0
        self.start_tokens = 0
        self.steps_this_rank = 0
        self.stopped_early_at: int | None = None
        # Seconds between one step's end and the next one's start: the Trainer fetches the next
        # batches there, so it is the time spent waiting on the data loader (logging, evaluating
        # and saving happen there too; they move the mark forward, see _mark)
        self.step_ended_at: float | None = None
        self.data_wait_s = 0.0

    @classmethod
    def for_job(cls, context: JobContext, **extra: Any) -> JobEventsCallback:
        return cls(context.emit, context.cancelled, context.take_requests, **extra)

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - Trainer's API
        self.started_at = self.last_log_at = time.monotonic()
        self.cpu_started = time.process_time()
        self.start_step = self.last_log_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen or 0
        self.emit("train_begin", step=state.global_step, max_steps=state.max_steps,
                  resumed_from_step=state.global_step or None, world_size=args.world_size,
                  **self.extra)

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.step_ended_at is not None:
            self.data_wait_s += time.monotonic() - self.step_ended_at
        self.step_ended_at = None

    def _mark(self) -> None:
        """The data loader's wait starts now (after a step, or after logging, evaluating or
        saving, which are not the loader's time)."""
        self.step_ended_at = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self._mark()
        self.steps_this_rank += 1
        if self.cancelled():
            control.should_training_stop = True  # SIGTERM normally gets here first
        requests = _shared_requests(self.take_requests(), args.world_size)
        if requests:  # the Trainer evaluates (when it has eval data), then saves, after this step
            control.should_save = True
            control.should_evaluate = args.eval_strategy != "no"
            self.emit("control_taken", step=state.global_step, actions=sorted(requests))
        if "stop" in requests:
            control.should_training_stop = True
            self.stopped_early_at = state.global_step
            self.emit("stopping_early", step=state.global_step, max_steps=state.max_steps)

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.emit("checkpoint", step=state.global_step, path=str(path), **self.extra)
        self._mark()

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if logs is None:
            return
        if "loss" in logs or "grad_norm" in logs:
            _check_finite(logs, state.global_step)
            # added to the Trainer's own logs dict, so the TensorBoard callback after us records
            # them too (the log history the Trainer keeps was copied before callbacks run)
            logs.update(self._step_signals(args, state))
            self.emit("progress", **self._progress(args, state, logs), **self.extra)
        if "eval_loss" in logs:
            self._emit_eval(state, logs)
        self._mark()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
        self._mark()
        metrics = metrics or {}
        loss = metrics.get("eval_loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"eval loss became {loss} at step {state.global_step}")

    def _emit_eval(self, state: Any, logs: dict[str, Any]) -> None:
        loss = float(logs["eval_loss"])
        self.emit("eval", step=state.global_step, epoch=state.epoch, eval_loss=loss,
                  perplexity=_perplexity(loss), **self.extra)

    def _step_signals(self, args: Any, state: Any) -> dict[str, float]:
        """Mean seconds per step since the last log, and the memory the process holds."""
        now = time.monotonic()
        steps, span = state.global_step - self.last_log_step, now - self.last_log_at
        step_time = span / steps if steps > 0 else None
        signals = {"memory_bytes": float(memory_bytes(args.device))}
        if span > 0:  # the share of the time since the last log spent waiting for batches
            signals["data_wait_pct"] = min(100.0, 100.0 * self.data_wait_s / span)
        self.last_log_at, self.last_log_step, self.data_wait_s = now, state.global_step, 0.0
        return signals if step_time is None else {**signals, "step_time_s": step_time}

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
                "step_time_s": logs.get("step_time_s"), "memory_bytes": logs.get("memory_bytes"),
                "data_wait_pct": logs.get("data_wait_pct"),
                "tokens_seen": state.num_input_tokens_seen, "elapsed_s": elapsed,
                # CPU seconds of this process: throughput per CPU-second survives a busy machine
                "cpu_s": time.process_time() - self.cpu_started,
                "eta_s": remaining * seconds_per_step if seconds_per_step else None}


def memory_bytes(device: Any) -> int:
    """CUDA's peak allocated bytes on a GPU; on the CPU, the process's resident set."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device))
    import psutil

    return int(psutil.Process().memory_info().rss)


def _shared_requests(requests: set[str], world_size: int) -> set[str]:
    """Rank 0 took the requests; every rank must act on the same step, or a distributed run
    hangs in its next collective: one small all-reduce tells them (only when distributed)."""
    import torch.distributed as dist

    if world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return requests
    import torch

    from engine.jobs import CONTROL_ACTIONS

    flags = torch.tensor([1 if action in requests else 0 for action in CONTROL_ACTIONS])
    if dist.get_backend() == "nccl":
        flags = flags.cuda()
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return {action for action, flag in zip(CONTROL_ACTIONS, flags.tolist()) if flag}


def tensorboard_callback(log_dir: Path) -> Any:
    """transformers' own TensorBoard callback writing into `log_dir` (transformers 5 has no
    logging_dir argument; a writer it re-creates after training, for a final evaluate, must
    land there too, not in ./runs)."""
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(log_dir)
    return callback


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
