"""`modeldeck finetune` and `modeldeck jobs list|show|cancel|resume|logs`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from console.output import emit, human_time, table
from engine import SCHEMA, actions
from engine.deck import Deck

# CLI flag -> FinetuneSettings field (all default to None: "not given", so --config can set them)
SETTING_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--method", "method", str, "lora (default), full or freeze"),
    ("--steps", "steps", int, "a fixed number of optimizer steps"),
    ("--epochs", "epochs", float, "passes over the data (default 1)"),
    ("--lr", "learning_rate", float, "learning rate (default: 2e-4 lora, 5e-5 full, 1e-4 freeze)"),
    ("--lr-scheduler", "lr_scheduler", str, "linear (default), cosine, constant, ..."),
    ("--warmup-steps", "warmup_steps", int, "learning-rate warm-up steps"),
    ("--batch-size", "batch_size", int, "examples per device per step (default 4)"),
    ("--grad-accum", "grad_accum", int, "gradient accumulation steps (default 1)"),
    ("--max-length", "max_length", int, "tokens per example, longer ones are cut (default 512)"),
    ("--eval-split", "eval_split", float, "share held out for eval when no --eval-file (default 0.1)"),
    ("--eval-file", "eval_file", str, "a separate eval dataset (same formats)"),
    ("--eval-every", "eval_every", int, "evaluate every N steps (default: at each checkpoint)"),
    ("--checkpoint-every", "checkpoint_every", int, "save a checkpoint every N steps (default 50)"),
    ("--lora-rank", "lora_rank", int, "LoRA rank (default 8)"),
    ("--lora-alpha", "lora_alpha", int, "LoRA alpha (default 16)"),
    ("--lora-targets", "lora_targets", str, "comma-separated module names (default: peft's)"),
    ("--trainable-layers", "trainable_layers", int, "freeze: top layers that train (default 2)"),
    ("--seed", "seed", int, "random seed (default 0)"),
    ("--device", "device", str, "auto (default), cpu, cuda, cuda:N"),
    ("--precision", "precision", str, "auto (default), fp32, bf16"),
)


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    _register_finetune(verbs, common)
    jobs = verbs.add_parser("jobs", parents=[common], help="fine-tuning and compression jobs")
    sub = jobs.add_subparsers(dest="jobs_verb", metavar="ACTION", required=True,
                              parser_class=type(jobs))
    listing = sub.add_parser("list", parents=[common], help="every job and its state")
    listing.add_argument("--kind", help="only jobs of this kind (finetune, compress)")
    listing.set_defaults(handler=list_command)
    for name, handler, text in (("show", show_command, "one job in full"),
                                ("cancel", cancel_command, "stop a running job"),
                                ("resume", resume_command, "continue a failed or cancelled job "
                                                           "from its last checkpoint")):
        verb = sub.add_parser(name, parents=[common], help=text)
        verb.add_argument("job_id", metavar="ID")
        verb.add_argument("--reason", help="recorded in the audit log")
        verb.set_defaults(handler=handler)
    logs = sub.add_parser("logs", parents=[common], help="the job's events (--json: one a line)")
    logs.add_argument("job_id", metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep reading until the job ends")
    logs.set_defaults(handler=logs_command)


def _register_finetune(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # Not built on `common`: sharing its --config action and overriding it would change it for
    # every verb. Here --config is the fine-tune TOML; deck.toml comes from $MODELDECK_CONFIG.
    finetune = verbs.add_parser("finetune", help="train NAME@VERSION on your data as a detached job")
    finetune.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    finetune.add_argument("reference", metavar="NAME@VERSION")
    finetune.add_argument("--data", required=True, type=Path,
                          help=".jsonl (text | prompt+completion | messages | text+label) or .txt")
    finetune.add_argument("--config", dest="finetune_config", type=Path, metavar="FILE",
                          help="fine-tune settings (TOML, see sample_configs/finetune-*.toml)")
    for flag, name, kind, text in SETTING_FLAGS:
        metavar = {int: "N", float: "X"}.get(kind, flag.lstrip("-").split("-")[-1].upper())
        finetune.add_argument(flag, dest=f"set_{name}", type=kind, default=None, metavar=metavar,
                              help=text)
    finetune.add_argument("--on-bad-row", choices=("error", "skip"), default="error")
    finetune.add_argument("--keep-adapter", action="store_true",
                          help="register the LoRA adapter (with its base) instead of merged weights")
    finetune.add_argument("--deploy-if-better", metavar="TARGET",
                          help="deploy the result to TARGET if its eval loss beats the parent's")
    finetune.add_argument("--nproc", type=int, default=1, help="processes (torchrun) on this machine")
    finetune.add_argument("--nnodes", type=int, default=1, help="machines taking part (torchrun)")
    finetune.add_argument("--rdzv-endpoint", help="HOST:PORT where the machines meet (torchrun)")
    finetune.add_argument("--node-rank", type=int, help="this machine's rank when --nnodes > 1")
    finetune.add_argument("--wait", action="store_true",
                          help="stay and print progress until the job ends (exit 1 unless it finished)")
    finetune.add_argument("--reason", help="recorded in the audit log")
    finetune.set_defaults(handler=finetune_command, config=None)


def finetune_command(args: argparse.Namespace, deck: Deck) -> int:
    overrides = {name: getattr(args, f"set_{name}") for _, name, _, _ in SETTING_FLAGS}
    request = actions.FinetuneRequest(
        reference=args.reference, data=args.data, overrides=overrides,
        config_file=args.finetune_config, on_bad_row=args.on_bad_row,
        keep_adapter=args.keep_adapter, deploy_if_better=args.deploy_if_better, nproc=args.nproc,
        nnodes=args.nnodes, rdzv_endpoint=args.rdzv_endpoint, node_rank=args.node_rank,
        reason=args.reason)
    started = actions.finetune(deck, request)
    if not args.wait:
        emit(args.json, "finetune", started.to_dict(),
             lambda: f"started job {started.job.id} ({started.data['rows']} rows, "
                     f"{started.data['format']}); follow it with `modeldeck jobs logs "
                     f"{started.job.id} --follow`")
        return 0
    if not args.json:
        print(f"job {started.job.id} started; waiting (Ctrl-C leaves it running)", flush=True)
        _print_events(deck, started.job.id, follow=True)
    else:
        for _ in _events(deck, started.job.id, follow=True):
            pass
    finished = actions.show_job(deck, started.job.id)
    emit(args.json, "finetune", {**finished.to_dict(), "data": started.data},
         lambda: _outcome_line(finished.job))
    return 0 if finished.job.state == "finished" else 1


def list_command(args: argparse.Namespace, deck: Deck) -> int:
    jobs = actions.list_jobs(deck, args.kind)
    emit(args.json, "jobs.list", {"jobs": [j.to_dict() for j in jobs]}, lambda: _jobs_table(jobs))
    return 0


def _jobs_table(jobs: list[Any]) -> str:
    if not jobs:
        return "no jobs yet: `modeldeck finetune NAME@VERSION --data FILE`"
    rows = [(j.id, j.kind, j.state, j.spec.get("parent"), (j.result or {}).get("version"),
             human_time(j.created_at), j.reason) for j in jobs]
    return table(("ID", "KIND", "STATE", "FROM", "RESULT", "CREATED", "REASON"), rows)


def show_command(args: argparse.Namespace, deck: Deck) -> int:
    details = actions.show_job(deck, args.job_id)
    emit(args.json, "jobs.show", details.to_dict(), lambda: _details_text(details))
    return 0


def _details_text(details: actions.JobResult) -> str:
    job, progress = details.job, details.data.get("last_progress") or {}
    lines = [f"{job.id}  ({job.kind}, {job.state}: {job.reason or '-'})",
             f"  attempt     {job.attempt}", f"  created     {human_time(job.created_at)}",
             f"  directory   {job.directory}", f"  from        {job.spec.get('parent', '-')}"]
    if progress:
        lines.append(f"  progress    {_progress_text(progress)}")
    if details.data.get("last_eval"):
        lines.append(f"  eval loss   {details.data['last_eval']['eval_loss']:.4f}")
    if job.result:
        lines.append(f"  result      {json.dumps(job.result, default=str)}")
    return "\n".join(lines)


def cancel_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.cancel_job(deck, actions.JobRequest(args.job_id, args.reason))
    emit(args.json, "jobs.cancel", result.to_dict(), lambda: _outcome_line(result.job))
    return 0


def resume_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.resume_job(deck, actions.JobRequest(args.job_id, args.reason))
    emit(args.json, "jobs.resume", result.to_dict(),
         lambda: f"resumed job {result.job.id} (attempt {result.job.attempt})")
    return 0


def logs_command(args: argparse.Namespace, deck: Deck) -> int:
    if args.json:  # JSON lines: one event a line, each with the schema, for scripts to stream
        for event in _events(deck, args.job_id, args.follow):
            sys.stdout.write(json.dumps({"schema": SCHEMA, "kind": "jobs.event", **event},
                                        default=str) + "\n")
            sys.stdout.flush()
        return 0
    _print_events(deck, args.job_id, args.follow)
    return 0


def _events(deck: Deck, job_id: str, follow: bool):
    from engine import jobs

    if follow:
        yield from jobs.follow_events(deck, job_id)
    else:
        yield from jobs.read_events(jobs.job_directory(deck, job_id))[0]


def _print_events(deck: Deck, job_id: str, follow: bool) -> None:
    for event in _events(deck, job_id, follow):
        print(_event_line(event), flush=True)


def _event_line(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "state":
        return f"[{event['state']}] {event.get('reason') or ''}".rstrip()
    if kind == "progress":
        return _progress_text(event)
    if kind == "eval":
        return f"eval step {event['step']}: loss {event['eval_loss']:.4f}"
    fields = {k: v for k, v in event.items() if k not in ("t", "type")}
    return f"{kind}: {json.dumps(fields, default=str)}"


def _progress_text(event: dict[str, Any]) -> str:
    parts = [f"step {event.get('step')}/{event.get('max_steps')}"]
    for key, label, fmt in (("loss", "loss", "{:.4f}"), ("learning_rate", "lr", "{:.2e}"),
                            ("tokens_per_s", "tok/s", "{:.0f}"), ("eta_s", "eta", "{:.0f}s")):
        if event.get(key) is not None:
            parts.append(f"{label} {fmt.format(event[key])}")
    return "  ".join(parts)


def _outcome_line(job: Any) -> str:
    if job.state == "finished" and job.result:
        metrics = job.result.get("metrics") or {}
        loss = metrics.get("eval_loss")
        suffix = f", eval loss {loss:.4f}" if loss is not None else ""
        return f"job {job.id} finished: registered {job.result.get('version')}{suffix}"
    return f"job {job.id} {job.state}: {job.reason or ''}".rstrip(": ")
