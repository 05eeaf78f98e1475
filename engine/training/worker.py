"""The fine-tuning worker: runs inside a job process (see engine.jobs), rank 0 of torchrun or alone.

Model and tokenizer come from the registry, training is transformers' Trainer (peft for LoRA),
checkpoints land in the job's checkpoints/ (safetensors weights), and on success rank 0 saves
the result and registers it as the next version of the model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from engine.jobs import JobContext
from engine.training.data import load_dataset
from engine.finetune_settings import FinetuneSettings, settings_from_dict


def run_finetune(context: JobContext) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    deck = context.deck()
    try:
        return _train_and_publish(context, deck)
    finally:
        deck.close()


def _train_and_publish(context: JobContext, deck: Any) -> dict[str, Any]:
    spec = context.spec
    settings = settings_from_dict(spec["settings"])
    parent = deck.registry.resolve(spec["parent"])
    model_dir = deck.registry.materialize(parent)
    from engine.training import preflight  # a job started by hand (or older) is refused too

    preflight.refuse_compressed(parent.ref, parent.lineage.get("parent"),
                                preflight.read_config(model_dir / "config.json"))
    tokenizer = load_tokenizer(model_dir, deck.paths.home)
    train, evaluation, data_info = _features(spec, settings, tokenizer)
    context.emit("data", **data_info)
    model = load_model(model_dir, deck.paths.home, spec.get("task", "causal-lm"),
                       spec.get("labels") or [], tokenizer)
    model = apply_method(model, settings, spec.get("task", "causal-lm"))
    context.emit("model", **trainable_summary(model))
    trainer = build_trainer(context, settings, model, tokenizer, train, evaluation, spec)
    parent_eval = _parent_eval_loss(context, trainer, spec, evaluation)
    trainer.train(resume_from_checkpoint=last_checkpoint(context.checkpoints))
    _write_rank_report(context, trainer)
    eval_loss = final_eval_loss(trainer) if evaluation else None  # every rank: it gathers
    if not context.is_main:
        return {}
    from engine.training.publish import publish_result

    result = publish_result(context, deck, parent, trainer.model, tokenizer, settings, spec,
                            eval_loss, parent_eval)
    stopped = _events_callback(trainer).stopped_early_at
    return result if stopped is None else {**result, "stopped_early_at_step": stopped}


def final_eval_loss(trainer: Any) -> float:
    """The eval loss of the final weights: the scheduled eval at the last step, or a fresh one."""
    history = trainer.state.log_history
    last = next((h for h in reversed(history) if "eval_loss" in h), None)
    if last is not None and last.get("step") == trainer.state.global_step:
        return float(last["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])


def _features(spec: dict[str, Any], settings: FinetuneSettings, tokenizer: Any):
    from engine.training.features import build_features, split_eval

    dataset = load_dataset(Path(spec["data"]), spec.get("on_bad_row", "error"))
    features = build_features(dataset, tokenizer, settings.max_length)
    if spec.get("eval_data"):
        eval_set = load_dataset(Path(spec["eval_data"]), spec.get("on_bad_row", "error"))
        train, evaluation = features, build_features(eval_set, tokenizer, settings.max_length)
    else:
        train, evaluation = split_eval(features, settings.eval_split, settings.seed)
    if not train:
        from engine.errors import BadInput

        raise BadInput(f"{dataset.path}: no row has anything to learn after tokenization "
                       f"(max length {settings.max_length})")
    return train, evaluation, {"format": dataset.format, "rows": len(dataset.examples),
                               "skipped_rows": len(dataset.skipped), "train_examples": len(train),
                               "eval_examples": len(evaluation),
                               "train_tokens": sum(len(f["input_ids"]) for f in train)}


def load_tokenizer(model_dir: Path, cache_home: Path) -> Any:
    from engine.modelio.loader import load_tokenizer as load

    tokenizer = load(model_dir, cache_home)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: Path, cache_home: Path, task: str, labels: list[str], tokenizer: Any):
    """fp32 weights to train (a GGUF parent through the loader's cached conversion)."""
    if task != "classification":
        from engine.modelio.loader import load_model as load

        return load(model_dir, cache_home, "float32")
    import torch
    from transformers import AutoModelForSequenceClassification

    from engine.modelio.loader import weights_directory

    model = AutoModelForSequenceClassification.from_pretrained(
        weights_directory(model_dir, cache_home, "float32"), dtype=torch.float32,
        num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, trust_remote_code=False)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def apply_method(model: Any, settings: FinetuneSettings, task: str) -> Any:
    if settings.method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                            lora_dropout=settings.lora_dropout,
                            target_modules=list(settings.lora_targets) if settings.lora_targets else None,
                            task_type="SEQ_CLS" if task == "classification" else "CAUSAL_LM")
        return get_peft_model(model, config)
    if settings.method == "freeze":
        freeze_all_but_top(model, settings.trainable_layers)
    return model


def freeze_all_but_top(model: Any, trainable_layers: int) -> None:
    """Train only the top N transformer blocks, the final norm and the output head."""
    blocks = _transformer_blocks(model)
    for parameter in model.parameters():
        parameter.requires_grad = False
    for block in blocks[-trainable_layers:]:
        for parameter in block.parameters():
            parameter.requires_grad = True
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for module in filter(None, [head, getattr(model, "score", None), getattr(model, "classifier", None),
                                getattr(getattr(model, "model", None), "norm", None)]):
        for parameter in module.parameters():
            parameter.requires_grad = True


def _transformer_blocks(model: Any) -> list[Any]:
    import torch

    lists: list[torch.nn.ModuleList] = [m for m in model.modules()
                                        if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        from engine.errors import BadInput

        raise BadInput("freeze: this architecture has no list of transformer blocks")
    longest = lists[0]
    for blocks in lists[1:]:  # the longest list of modules is the stack of transformer blocks
        longest = blocks if len(blocks) > len(longest) else longest
    return list(longest)


def trainable_summary(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable}


def build_trainer(context: JobContext, settings: FinetuneSettings, model: Any, tokenizer: Any,
                  train: list, evaluation: list, spec: dict[str, Any]) -> Any:
    from transformers import (DataCollatorForSeq2Seq, DataCollatorWithPadding, Trainer)

    from engine.training.callback import JobEventsCallback, tensorboard_callback

    collator: DataCollatorWithPadding | DataCollatorForSeq2Seq
    if spec.get("task") == "classification":
        collator = DataCollatorWithPadding(tokenizer)
    else:
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return Trainer(model=model, args=training_arguments(context, settings, bool(evaluation)),
                   train_dataset=train, eval_dataset=evaluation or None, data_collator=collator,
                   processing_class=tokenizer,
                   callbacks=[JobEventsCallback.for_job(context), tensorboard_callback(context.tensorboard)])


def training_arguments(context: JobContext, settings: FinetuneSettings, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    use_cpu, precision = device_and_precision(context, settings)
    eval_every = settings.eval_every or settings.checkpoint_every
    return TrainingArguments(
        output_dir=str(context.checkpoints), max_steps=settings.steps or -1,
        num_train_epochs=settings.epochs or 1.0, learning_rate=settings.effective_lr,
        lr_scheduler_type=settings.lr_scheduler, warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay, per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, max_grad_norm=settings.max_grad_norm,
        logging_steps=settings.logging_steps, logging_nan_inf_filter=False,
        save_strategy="steps", save_steps=settings.checkpoint_every, save_total_limit=2,
        eval_strategy="steps" if has_eval else "no", eval_steps=eval_every if has_eval else None,
        seed=settings.seed, data_seed=settings.seed, use_cpu=use_cpu,
        bf16=precision == "bf16", fp16=precision == "fp16",
        ddp_backend="gloo" if use_cpu and context.world_size > 1 else None,
        # report_to none: the TensorBoard callback is passed explicitly, after ours, so it
        # records our step time and memory too, in the job's own tensorboard/ (build_trainer)
        include_num_input_tokens_seen="non_padding", report_to="none", disable_tqdm=True,
        remove_unused_columns=False, dataloader_num_workers=0, save_only_model=False)


def device_and_precision(context: JobContext, settings: FinetuneSettings,
                         machine: Any = None) -> tuple[bool, str]:
    """(use_cpu, fp32 | bf16 | fp16) through the one device policy (engine.modelio.devices).
    A job started on cuda:N runs with CUDA_VISIBLE_DEVICES=N (engine.jobs), so its device here
    is "cuda": the Trainer's cuda:0 is GPU N."""
    from engine.modelio.devices import choose_device, this_machine, training_precision

    machine = machine or this_machine()
    requested = context.device if context.requested_device else settings.device
    device = choose_device(requested, machine)
    return device == "cpu", training_precision(settings.precision, device, machine)


def last_checkpoint(directory: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing. A kill during a save leaves a
    checkpoint-N without trainer_state.json (saved after the weights and optimizer), which
    resume must skip, as transformers' get_last_checkpoint would not."""
    from engine.training.checkpoints import complete_checkpoints

    complete = complete_checkpoints(directory)
    return str(complete[max(complete)]) if complete else None


def _parent_eval_loss(context: JobContext, trainer: Any, spec: dict[str, Any],
                      evaluation: list) -> float | None:
    """The parent's eval loss on the same data, measured once (before the first step)."""
    if not (spec.get("deploy_if_better") and evaluation):
        return None
    saved = context.checkpoints / "parent_eval.json"
    if saved.exists():
        return json.loads(saved.read_text())["eval_loss"]
    loss = float(trainer.evaluate(metric_key_prefix="parent")["parent_loss"])
    if context.is_main:
        saved.write_text(json.dumps({"eval_loss": loss}))
        context.emit("parent_eval", eval_loss=loss,
                     perplexity=math.exp(loss) if loss < 50 else None)
    return loss


def _write_rank_report(context: JobContext, trainer: Any) -> None:
    """Each rank says what it did, so a distributed run can show that every rank trained."""
    reports = context.directory / "ranks"
    reports.mkdir(exist_ok=True)
    callback = _events_callback(trainer)
    report = {"rank": context.rank, "world_size": context.world_size, "pid": os.getpid(),
              "steps": callback.steps_this_rank, "global_step": trainer.state.global_step,
              "attempt": context.attempt}
    (reports / f"rank{context.rank}.json").write_text(json.dumps(report))


def _events_callback(trainer: Any) -> Any:
    return next(c for c in trainer.callback_handler.callbacks if hasattr(c, "steps_this_rank"))
