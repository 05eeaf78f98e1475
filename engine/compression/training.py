"""Compression's training phases (recovery after pruning, distillation) on the fine-tuning stack:
transformers' Trainer (distillation is a custom compute_loss), engine.training's events
callback and the Trainer's TensorBoard callback. So they get the device policy, checkpoints in
the job directory, resume, stop-early / checkpoint-now requests, events and TensorBoard files."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Emit = Callable[..., None]  # emit(event_type, **fields)
SAVE_EVERY = 50  # steps between scheduled checkpoints of a training phase (as fine-tuning's default)


@dataclass(frozen=True)
class TrainingRun:
    """Where a training phase saves and reports. workdir/<phase>/ holds its checkpoints."""

    workdir: Path
    emit: Emit = lambda *_, **__: None
    cancelled: Callable[[], bool] = lambda: False
    take_requests: Callable[[], set[str]] = field(default=set)
    tensorboard: Path | None = None  # default: workdir/tensorboard
    device: str = "cpu"


@contextmanager
def scratch_run(emit: Emit, cancelled: Callable[[], bool] = lambda: False) -> Iterator[TrainingRun]:
    """A run whose checkpoints live in a temporary directory (in-process callers, tests)."""
    with tempfile.TemporaryDirectory(prefix="modeldeck-train-") as directory:
        yield TrainingRun(Path(directory), emit, cancelled)


def text_blocks(tokenizer: Any, text: str, seq_len: int) -> list[dict[str, Any]]:
    """Consecutive token blocks of `text`, each its own label (causal LM)."""
    token_ids = tokenizer(text, return_tensors="pt").input_ids[0]
    if len(token_ids) < 2:
        raise ValueError("training text is too short")
    seq_len = min(seq_len, len(token_ids))
    return [{"input_ids": block, "labels": block}
            for block in (token_ids[i:i + seq_len]
                          for i in range(0, len(token_ids) - seq_len + 1, seq_len))]


def train(model: Any, blocks: list[dict[str, Any]], run: TrainingRun, phase: str, steps: int,
          learning_rate: float, batch_size: int, after_step: Callable[[], None] | None = None,
          teacher: tuple[Any, float, float] | None = None) -> list[float]:
    """`steps` AdamW steps (constant rate, gradients clipped at 1) through the Trainer; with
    `teacher` = (model, temperature, alpha), the loss is distillation_loss. Returns the losses."""
    from engine.errors import ActionFailed
    from engine.training.callback import JobEventsCallback, tensorboard_callback
    from engine.training.worker import last_checkpoint

    output = run.workdir / phase
    callbacks = [JobEventsCallback(run.emit, run.cancelled, run.take_requests, phase=phase),
                 tensorboard_callback(run.tensorboard or run.workdir / "tensorboard")]
    if after_step is not None:
        callbacks.append(_after_step(after_step))
    trainer = _trainer_class(teacher)(
        model=model, args=_arguments(output, run.device, steps, learning_rate, batch_size),
        train_dataset=blocks, callbacks=callbacks, **_teacher_options(teacher))
    _quiet(trainer)
    trainer.train(resume_from_checkpoint=last_checkpoint(output))
    if run.cancelled():
        raise ActionFailed("cancelled")
    model.eval()
    return [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]


def _quiet(trainer: Any) -> None:
    """No log dicts on stdout (an in-process caller's output is its own): the events carry them."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def _arguments(output: Path, device: str, steps: int, learning_rate: float, batch_size: int) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output), max_steps=steps, learning_rate=learning_rate,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
        per_device_train_batch_size=batch_size, logging_steps=1, logging_nan_inf_filter=False,
        save_strategy="steps", save_steps=SAVE_EVERY, save_total_limit=1, eval_strategy="no",
        use_cpu=not device.startswith("cuda"), include_num_input_tokens_seen="all",
        report_to="none", disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, seed=0, data_seed=0)


def _trainer_class(teacher: tuple[Any, float, float] | None) -> Any:
    from transformers import Trainer

    if teacher is None:
        return Trainer

    class DistillationTrainer(Trainer):
        """The Trainer with the distillation loss against a frozen teacher."""

        def __init__(self, *args: Any, distill_teacher: Any, temperature: float, alpha: float,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.loss_of = distillation_loss(distill_teacher, temperature, alpha)

        def compute_loss(self, model, inputs, return_outputs=False,  # noqa: ANN001 - Trainer's API
                         num_items_in_batch=None):
            loss = self.loss_of(model, inputs["input_ids"])
            return (loss, None) if return_outputs else loss

    return DistillationTrainer


def _teacher_options(teacher: tuple[Any, float, float] | None) -> dict[str, Any]:
    if teacher is None:
        return {}
    model, temperature, alpha = teacher
    return {"distill_teacher": model, "temperature": temperature, "alpha": alpha}


def _after_step(function: Callable[[], None]) -> Any:
    """A callback running `function` after every optimizer step (pruning masks stay zero),
    before a checkpoint of that step is saved."""
    from transformers import TrainerCallback

    class AfterStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - Trainer's API
            function()

    return AfterStep()


def distillation_loss(teacher: Any, temperature: float, alpha: float) -> Callable[[Any, Any], Any]:
    """alpha * KL(teacher || student) at `temperature` (scaled by T^2) + (1-alpha) * CE."""
    import torch
    import torch.nn.functional as functional

    def loss_of(student: Any, batch: Any) -> Any:
        if next(teacher.parameters()).device != batch.device:  # the Trainer placed the student
            teacher.to(batch.device)
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
