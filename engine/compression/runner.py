"""One compression run, start to finish: evaluate the parent, apply the method, store the result
as safetensors, reload it from disk and evaluate that (the report describes what is stored), and
register it as the next version with lineage and the report. Plain functions: the job worker
calls `compress_version`, and so can a test, in-process."""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.compression.spec import CompressSpec
from engine.compression.training import Emit, TrainingRun, scratch_run


def _eval_settings(spec: CompressSpec):
    from engine.compression.evaluate import DEFAULT_EVAL_TEXT, EvalSettings

    return EvalSettings(eval_file=Path(spec.eval_file) if spec.eval_file else DEFAULT_EVAL_TEXT,
                        decode_tokens=spec.decode_tokens, batch_size=spec.batch_size)


def apply_method(model, tokenizer, spec: CompressSpec, emit: Emit,
                 cancelled: Callable[[], bool] = lambda: False,
                 run: TrainingRun | None = None) -> tuple[Any, dict | None, dict]:
    """(compressed model, int8 storage marker or None, notes for the report). A method that
    trains (pruning recovery, distillation) saves its checkpoints under run.workdir; without
    a run, in a temporary directory."""
    import torch

    if spec.method in ("bf16", "fp16"):
        return model.to(torch.bfloat16 if spec.method == "bf16" else torch.float16), None, {}
    if spec.method == "int8":
        from engine.modelio.int8 import quantize_int8

        marker = quantize_int8(model, spec.keep)
        return model, marker, {"int8_format": marker["format"],
                               "int8_modules": len(marker["linear_modules"]),
                               "int8_embedding": marker["embedding"]}
    if run is None:
        with scratch_run(emit, cancelled) as scratch:
            return _trained_method(model, tokenizer, spec, scratch)
    return _trained_method(model, tokenizer, spec, run)


def _trained_method(model, tokenizer, spec: CompressSpec, run: TrainingRun):
    return (_prune if spec.method == "prune" else _distill)(model, tokenizer, spec, run)


def _prune(model, tokenizer, spec, run: TrainingRun):
    from engine.compression import prune
    from engine.compression.training import text_blocks, train

    masks: dict = {}
    if spec.structured:
        calibration = _calibration_ids(tokenizer, spec)
        prune_structured = {"mlp": prune.prune_mlp_channels, "heads": prune.prune_head_groups}
        notes = prune_structured[spec.structured](model, spec.sparsity, calibration)
    else:
        masks = prune.prune_unstructured(model, spec.sparsity)
        notes = {"removed": "single weights (unstructured): stored dense, so no size or speed win"}
    if spec.recover_steps:
        model.float()
        blocks = text_blocks(tokenizer, spec.train_text_path.read_text(), spec.seq_len)
        losses = train(model, blocks, run, "recover", spec.recover_steps, spec.learning_rate,
                       spec.train_batch,
                       after_step=prune.reapply_masks(model, masks) if masks else None)
        notes = {**notes, "recover_loss_first": losses[0], "recover_loss_last": losses[-1]}
    return model, None, notes


def _calibration_ids(tokenizer, spec: CompressSpec, max_tokens: int = 1024):
    """Tokens from the training text (never the eval text) for activation statistics."""
    token_ids = tokenizer(spec.train_text_path.read_text(), return_tensors="pt").input_ids
    return token_ids[:, :max_tokens]


def _distill(teacher, tokenizer, spec: CompressSpec, run: TrainingRun):
    from engine.compression.distill import build_student
    from engine.compression.training import text_blocks, train

    teacher.float().eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    student, kept = build_student(teacher, spec.student_layers)
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    blocks = text_blocks(tokenizer, spec.train_text_path.read_text(), spec.seq_len)
    losses = train(student, blocks, run, "distill", spec.steps, spec.learning_rate,
                   spec.train_batch, teacher=(teacher, spec.temperature, spec.alpha))
    return student, None, {"student_layers": kept, "distill_loss_first": losses[0],
                           "distill_loss_last": losses[-1]}


def compress_version(deck, spec: CompressSpec, workdir: Path, emit: Emit,
                     cancelled: Callable[[], bool] = lambda: False,
                     device: str | None = None, take_requests: Callable[[], set[str]] = set,
                     tensorboard: Path | None = None) -> dict[str, Any]:
    """Compress and measure on `device` (default: spec.device through the one device policy;
    the job worker passes its pinned device, engine.jobs.JobContext.device). A training phase
    checkpoints under workdir, takes the job's stop / checkpoint requests and writes
    TensorBoard files to `tensorboard` (default workdir/tensorboard)."""
    from engine.compression.evaluate import compare, measure
    from engine.modelio.devices import resolve_device
    from engine.modelio.loader import load_model, load_tokenizer
    from engine.modelio.storage import save_model

    parent = deck.registry.resolve(spec.reference)
    source = deck.registry.materialize(parent)
    settings = _eval_settings(spec)
    device_name = resolve_device(device or spec.device)
    tokenizer = load_tokenizer(source, deck.paths.home)
    emit("phase", phase="evaluate-parent", ref=parent.ref, device=device_name)
    model = load_model(source, deck.paths.home).to(device_name)
    parent_metrics = measure(model, tokenizer, source, settings)
    emit("metrics", which="parent", **parent_metrics.to_dict())
    emit("phase", phase="compress", method=spec.method)
    run = TrainingRun(workdir, emit, cancelled, take_requests, tensorboard, device_name)
    model, marker, notes = apply_method(model, tokenizer, spec, emit, cancelled, run)
    output = workdir / "output"
    shutil.rmtree(output, ignore_errors=True)
    save_model(model.to("cpu"), tokenizer, output, marker)  # the files never depend on the device
    del model
    _release(device_name)
    emit("phase", phase="evaluate-result")
    result_model = load_model(output).to(device_name)
    result_metrics = measure(result_model, tokenizer, output, settings)
    emit("metrics", which="result", **result_metrics.to_dict())
    parent_model = load_model(source, deck.paths.home).to(device_name)
    parent_metrics, result_metrics, speed = _interleaved(parent_model, result_model, tokenizer,
                                                         settings, parent_metrics, result_metrics)
    emit("speed", **speed)
    report = {**compare(parent_metrics, result_metrics, spec.max_ppl_increase, speed),
              "method": spec.method, "settings": spec.settings(), "notes": notes,
              "eval_file": str(settings.eval_file), "parent_ref": parent.ref,
              **measured_on(spec.device, device_name)}
    version = _register(deck, parent, spec, output, report)
    emit("registered", ref=version.ref, status=version.status, verdict=report["verdict"])
    return {"version": version.ref, "status": version.status, "report": report}


def _release(device_name: str) -> None:
    gc.collect()
    if device_name.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()  # the compressed model's memory, before two models load


def measured_on(requested: str, device_name: str) -> dict[str, str]:
    """What the report says about where it measured: the device as the user named it (cuda:N,
    which the job's worker sees as "cuda": engine.jobs pins it) and what that device is."""
    shown = requested if requested.startswith("cuda:") else device_name
    if not device_name.startswith("cuda"):
        return {"device": shown, "device_name": device_name}
    import torch

    return {"device": shown, "device_name": torch.cuda.get_device_name(torch.device(device_name))}


def _interleaved(parent_model, result_model, tokenizer, settings, parent_metrics, result_metrics):
    """The speed figures the report compares come from interleaved rounds (see evaluate)."""
    import statistics
    from dataclasses import replace

    from engine.compression.evaluate import interleaved_speed, judge_speed, load_per_core

    rounds = interleaved_speed(parent_model, result_model, tokenizer, settings)
    speed = judge_speed(rounds["parent"], rounds["result"], load_per_core())

    def with_rounds(metrics, name: str):
        return replace(metrics, decode_tokens_per_s=round(statistics.median(rounds[name]), 2),
                       ttft_s=round(statistics.median(rounds[f"{name}_ttft"]), 4))

    return with_rounds(parent_metrics, "parent"), with_rounds(result_metrics, "result"), speed


def _register(deck, parent, spec: CompressSpec, output: Path, report: dict[str, Any]):
    from engine.registry.inspect import describe_source

    result = report["result"]
    metrics = {"perplexity": result["perplexity"],
               "decode_tokens_per_s": result["decode_tokens_per_s"], "compression": report}
    return deck.registry.register(
        parent.model, describe_source(output), produced_by="compress", source=parent.ref,
        parent_version=parent.version, metrics=metrics,
        lineage={"parent": parent.ref, "method": spec.method, "settings": spec.settings()},
        status="rejected" if report["verdict"] == "rejected" else "ready",
        audit_verb="compress", audit_arguments={"ref": parent.ref, **spec.to_dict()})
