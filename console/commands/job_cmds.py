"""`modeldeck finetune` and `modeldeck jobs list|show|cancel|resume|logs`, and the training
job's actions and reads: `jobs stop|checkpoint|register-checkpoint|metrics|snapshot`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from console import present, present_jobs
from console.commands.arguments import (device, existing_file, job_id, number, text,
                                         whole)
from console.output import emit, human_time, table
from engine import actions
from engine.deck import Deck
from engine.errors import BadInput

# A numpy seed (transformers' set_seed seeds numpy too) must fit in 32 bits.
MAX_SEED = 2**32 - 1
# torchrun starts this many worker processes here: far more than any machine has GPUs or cores.
MAX_NPROC = 1024


def _eval_split(text_value: str) -> float:
    """A share in [0, 1): the upper bound is exclusive (1 would hold out every row)."""
    share = number("--eval-split", 0.0, 1.0)(text_value)
    if share >= 1.0:
        raise argparse.ArgumentTypeError(f"--eval-split must be less than 1, not {share:g}")
    return share


# CLI flag -> FinetuneSettings field, its type function (judged at the boundary), metavar and help.
# All default to None: "not given", so --config and deck.toml [finetune] can set them.
SETTING_FLAGS: tuple[tuple[str, str, Callable[[str], Any], str, str], ...] = (
    ("--method", "method", text("--method"), "METHOD", "lora (default), full or freeze"),
    ("--steps", "steps", whole("--steps", 1), "N", "a fixed number of optimizer steps"),
    ("--epochs", "epochs", number("--epochs", 0.0, exclusive_minimum=True), "X",
     "passes over the data (default 1)"),
    ("--lr", "learning_rate", number("--lr", 0.0, exclusive_minimum=True), "X",
     "learning rate (default: 2e-4 lora, 5e-5 full, 1e-4 freeze)"),
    ("--lr-scheduler", "lr_scheduler", text("--lr-scheduler"), "SCHEDULER",
     "linear (default), cosine, constant, ..."),
    ("--warmup-steps", "warmup_steps", whole("--warmup-steps", 0), "N", "learning-rate warm-up steps"),
    ("--batch-size", "batch_size", whole("--batch-size", 1), "N",
     "examples per device per step (default 4)"),
    ("--grad-accum", "grad_accum", whole("--grad-accum", 1), "N",
     "gradient accumulation steps (default 1)"),
    ("--max-length", "max_length", whole("--max-length", 1), "N",
     "tokens per example, longer ones are cut (default 512)"),
    ("--eval-split", "eval_split", _eval_split, "X",
     "share held out for eval when no --eval-file (default 0.1)"),
    ("--eval-file", "eval_file", existing_file("--eval-file"), "FILE",
     "a separate eval dataset (same formats)"),
    ("--eval-every", "eval_every", whole("--eval-every", 1), "N",
     "evaluate every N steps (default: at each checkpoint)"),
    ("--checkpoint-every", "checkpoint_every", whole("--checkpoint-every", 1), "N",
     "save a checkpoint every N steps (default 50)"),
    ("--lora-rank", "lora_rank", whole("--lora-rank", 1), "N", "LoRA rank (default 8)"),
    ("--lora-alpha", "lora_alpha", whole("--lora-alpha", 1), "N", "LoRA alpha (default 16)"),
    ("--lora-targets", "lora_targets", text("--lora-targets"), "NAMES",
     "comma-separated module names (default: peft's)"),
    ("--trainable-layers", "trainable_layers", whole("--trainable-layers", 1), "N",
     "freeze: top layers that train (default 2)"),
    ("--seed", "seed", whole("--seed", 0, MAX_SEED), "N", "random seed (default 0)"),
    ("--device", "device", device(), "DEVICE", "auto (default), cpu, cuda, cuda:N"),
    ("--precision", "precision", text("--precision"), "PRECISION", "auto (default), fp32, bf16"),
)


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    _register_finetune(verbs, common)
    jobs = verbs.add_parser("jobs", parents=[common], help="fine-tuning and compression jobs")
    sub = jobs.add_subparsers(dest="jobs_verb", metavar="ACTION", required=True,
                              parser_class=type(jobs))
    listing = sub.add_parser("list", parents=[common], help="every job and its state")
    listing.add_argument("--kind", type=text("--kind"),
                         help="only jobs of this kind (finetune, compress)")
    listing.set_defaults(handler=list_command)
    for name, handler, summary in (("show", show_command, "one job in full"),
                                ("cancel", cancel_command, "stop a running job"),
                                ("resume", resume_command, "continue a failed or cancelled job "
                                                           "from its last checkpoint"),
                                ("stop", control_command, "stop a training job early: finish the "
                                 "step, save, evaluate and register its version"),
                                ("checkpoint", control_command, "evaluate and save a checkpoint "
                                                                "of a running training job now")):
        verb = sub.add_parser(name, parents=[common], help=summary)
        verb.add_argument("job_id", metavar="ID", type=job_id)
        verb.add_argument("--reason", type=text("--reason"), help="recorded in the audit log")
        verb.set_defaults(handler=handler)
    _register_training_reads(sub, common)
    logs = sub.add_parser("logs", parents=[common], help="the job's events (--json: one a line)")
    logs.add_argument("job_id", metavar="ID", type=job_id)
    logs.add_argument("--follow", "-f", action="store_true", help="keep reading until the job ends")
    logs.set_defaults(handler=logs_command)


def _register_training_reads(sub: argparse._SubParsersAction,
                             common: argparse.ArgumentParser) -> None:
    register_checkpoint = sub.add_parser(
        "register-checkpoint", parents=[common],
        help="register a fine-tuning checkpoint as a version, with its eval metrics")
    register_checkpoint.add_argument("job_id", metavar="ID", type=job_id)
    register_checkpoint.add_argument("--step", type=whole("--step", 0), metavar="N",
                                     help="the checkpoint's step (default: the newest)")
    register_checkpoint.add_argument("--reason", type=text("--reason"),
                                     help="recorded in the audit log")
    register_checkpoint.set_defaults(handler=register_checkpoint_command)
    metrics = sub.add_parser("metrics", parents=[common],
                             help="a job's training signals by step, raw and smoothed")
    metrics.add_argument("job_id", metavar="ID", type=job_id)
    metrics.add_argument("--metric", type=text("--metric"),
                         help="one signal (loss, eval_loss, learning_rate, grad_norm, ...)")
    metrics.add_argument("--around", type=whole("--around", 0), metavar="STEP",
                         help="only the steps near STEP")
    metrics.add_argument("--window", type=whole("--window", 0), metavar="N",
                         help="with --around: N steps either side (default 10)")
    metrics.add_argument("--span", type=number("--span", 1.0), metavar="X",
                         help="the EMA span of the smoothed values (default 10)")
    metrics.set_defaults(handler=metrics_command)
    snapshot = sub.add_parser("snapshot", parents=[common], help="every signal at one step")
    snapshot.add_argument("job_id", metavar="ID", type=job_id)
    snapshot.add_argument("--step", required=True, type=whole("--step", 0), metavar="N")
    snapshot.set_defaults(handler=snapshot_command)


def _register_finetune(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # Not built on `common`: sharing its --config action and overriding it would change it for
    # every verb. Here --config is the fine-tune TOML; deck.toml comes from $MODELDECK_CONFIG.
    finetune = verbs.add_parser("finetune", help="train NAME@VERSION on your data as a detached job")
    # SUPPRESS: `modeldeck --json finetune ...` sets it at the top level; a default here would undo it
    finetune.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                          help="print one JSON document on stdout")
    finetune.add_argument("reference", metavar="NAME@VERSION", type=text("NAME@VERSION"))
    finetune.add_argument("--data", required=True, type=existing_file("--data"),
                          help=".jsonl (text | prompt+completion | messages | text+label) or .txt")
    finetune.add_argument("--config", dest="finetune_config", type=existing_file("--config"),
                          metavar="FILE",
                          help="fine-tune settings (TOML, see sample_configs/finetune-*.toml)")
    for flag, name, convert, metavar, description in SETTING_FLAGS:
        finetune.add_argument(flag, dest=f"set_{name}", type=convert, default=None, metavar=metavar,
                              help=description)
    finetune.add_argument("--on-bad-row", choices=("error", "skip"), default="error")
    finetune.add_argument("--keep-adapter", action="store_true",
                          help="register the LoRA adapter (with its base) instead of merged weights")
    finetune.add_argument("--deploy-if-better", metavar="TARGET", type=text("--deploy-if-better"),
                          help="deploy the result to TARGET if its eval loss beats the parent's")
    finetune.add_argument("--nproc", type=whole("--nproc", 1, MAX_NPROC), default=1, metavar="N",
                          help="processes (torchrun) on this machine")
    finetune.add_argument("--nnodes", type=whole("--nnodes", 1, MAX_NPROC), default=1, metavar="N",
                          help="machines taking part (torchrun)")
    finetune.add_argument("--rdzv-endpoint", type=text("--rdzv-endpoint"),
                          help="HOST:PORT where the machines meet (torchrun)")
    finetune.add_argument("--node-rank", type=whole("--node-rank", 0), metavar="N",
                          help="this machine's rank when --nnodes > 1")
    finetune.add_argument("--wait", action="store_true",
                          help="stay and print progress until the job ends (exit 1 unless it finished)")
    finetune.add_argument("--reason", type=text("--reason"), help="recorded in the audit log")
    finetune.set_defaults(handler=finetune_command)


def finetune_request(args: argparse.Namespace) -> actions.FinetuneRequest:
    """The request `modeldeck finetune` sends: the flags given, and nothing for those not given
    (deck.toml's [finetune] fills them in the verb, as it does for the console's form)."""
    overrides = {name: getattr(args, f"set_{name}") for _, name, _, _, _ in SETTING_FLAGS
                 if getattr(args, f"set_{name}") is not None}
    return actions.FinetuneRequest(
        reference=args.reference, data=Path(args.data), overrides=overrides,
        config_file=args.finetune_config, on_bad_row=args.on_bad_row,
        keep_adapter=args.keep_adapter, deploy_if_better=args.deploy_if_better, nproc=args.nproc,
        nnodes=args.nnodes, rdzv_endpoint=args.rdzv_endpoint, node_rank=args.node_rank,
        reason=args.reason)


def finetune_command(args: argparse.Namespace, deck: Deck) -> int:
    _check_launch(args)
    started = actions.finetune(deck, finetune_request(args))
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


def _check_launch(args: argparse.Namespace) -> None:
    """Flags that are only wrong together (argparse judges each alone)."""
    if args.node_rank is not None and args.node_rank >= args.nnodes:
        raise BadInput(f"--node-rank must be below --nnodes ({args.nnodes}), not {args.node_rank}")
    if args.nnodes > 1 and not args.rdzv_endpoint:  # torchrun --standalone is one machine only:
        # the job would wait for machines that can never join
        raise BadInput("--nnodes above 1 needs --rdzv-endpoint HOST:PORT where the machines meet")


def list_command(args: argparse.Namespace, deck: Deck) -> int:
    jobs = actions.list_jobs(deck, args.kind)
    emit(args.json, "jobs.list", {"jobs": [j.to_dict() for j in jobs]}, lambda: _jobs_table(jobs))
    return 0


def _jobs_table(jobs: list[Any]) -> str:
    if not jobs:
        return "no jobs yet: `modeldeck finetune NAME@VERSION --data FILE`"
    rows = [(j.id, j.kind, j.state, present_jobs.job_source(j.spec), (j.result or {}).get("version"),
             human_time(j.created_at), j.reason) for j in jobs]
    return table(("ID", "KIND", "STATE", "FROM", "RESULT", "CREATED", "REASON"), rows)


def show_command(args: argparse.Namespace, deck: Deck) -> int:
    details = actions.show_job(deck, args.job_id)
    emit(args.json, "jobs.show", details.to_dict(), lambda: _details_text(details))
    return 0


def _details_text(details: actions.JobResult) -> str:
    """The job as a designed view (console.present): state, source, progress, and its result
    as the parent-vs-result table its kind has."""
    return present.sections_text(present_jobs.job_report(details.job.to_dict(), details.data))


def cancel_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.cancel_job(deck, actions.JobRequest(args.job_id, args.reason))
    emit(args.json, "jobs.cancel", result.to_dict(), lambda: _outcome_line(result.job))
    return 0


def resume_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.resume_job(deck, actions.JobRequest(args.job_id, args.reason))
    emit(args.json, "jobs.resume", result.to_dict(),
         lambda: f"resumed job {result.job.id} (attempt {result.job.attempt})")
    return 0


def control_command(args: argparse.Namespace, deck: Deck) -> int:
    verb = actions.stop_job if args.jobs_verb == "stop" else actions.checkpoint_job
    result = verb(deck, actions.JobRequest(args.job_id, args.reason))
    what = {"stop": "stop early", "checkpoint": "checkpoint now"}[args.jobs_verb]
    emit(args.json, f"jobs.{args.jobs_verb}", result.to_dict(),
         lambda: f"asked job {result.job.id} to {what}; it acts after its current step "
                 f"(`modeldeck jobs logs {result.job.id} --follow`)")
    return 0


def register_checkpoint_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.register_checkpoint(
        deck, actions.RegisterCheckpointRequest(args.job_id, args.step, args.reason))
    loss = result.data["metrics"].get("eval_loss")
    emit(args.json, "jobs.register-checkpoint", result.to_dict(),
         lambda: f"registered {result.data['version']} from checkpoint {result.data['step']} "
                 f"of job {result.job.id}"
                 + (f", eval loss {_fixed(loss, '{:.4f}')}" if loss is not None else ", not evaluated"))
    return 0


def metrics_command(args: argparse.Namespace, deck: Deck) -> int:
    request = actions.MetricsRequest(args.job_id, args.metric, args.around, args.window, args.span)
    result = actions.job_metrics(deck, request)
    emit(args.json, "jobs.metrics", result, lambda: _metrics_text(result))
    return 0


def _metrics_text(result: dict[str, Any]) -> str:
    series = {name: data["points"] for name, data in result["metrics"].items() if data["points"]}
    if not series:
        return f"job {result['job']}: nothing logged there yet"
    if len(series) == 1:
        points = next(iter(series.values()))
        return table(("STEP", next(iter(series)).upper(), "SMOOTHED"),
                     [(p["step"], _fixed(p["value"], "{:.6g}"), _fixed(p["smoothed"], "{:.6g}"))
                      for p in points])
    return table(("METRIC", "POINTS", "STEP", "LAST", "SMOOTHED"),
                 [(name, len(points), points[-1]["step"], _fixed(points[-1]["value"], "{:.6g}"),
                   _fixed(points[-1]["smoothed"], "{:.6g}")) for name, points in series.items()])


def snapshot_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.job_snapshot(deck, args.job_id, args.step)
    emit(args.json, "jobs.snapshot", result,
         lambda: table(("METRIC", f"STEP {result['step']}"),
                       [(name, _fixed(value, "{:.6g}")) for name, value in result["metrics"].items()]))
    return 0


def logs_command(args: argparse.Namespace, deck: Deck) -> int:
    if args.json:  # JSON lines, one event a line, for scripts to stream. The event is nested:
        # its own fields (`kind` among them) must not overwrite the envelope's schema and kind.
        for event in _events(deck, args.job_id, args.follow):
            emit(True, "jobs.event", {"job": args.job_id, "event": event})
        return 0
    _print_events(deck, args.job_id, args.follow)
    return 0


def _events(deck: Deck, job_id: str, follow: bool) -> Iterator[dict[str, Any]]:
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
        return f"[{event.get('state')}] {event.get('reason') or ''}".rstrip()
    if kind == "progress":
        return _progress_text(event)
    if kind == "eval":
        return f"eval step {event.get('step')}: loss {_fixed(event.get('eval_loss'), '{:.4f}')}"
    # Other events (data, model, registered, deploy_decision, ...): their fields as a person
    # reads them (`key=value`, numbers rounded), never JSON.
    fields = {k: v for k, v in event.items() if k not in ("t", "type")}
    return f"{kind}: {present.plain(fields)}"


def _progress_text(event: dict[str, Any]) -> str:
    parts = [f"step {event.get('step')}/{event.get('max_steps')}"]
    for key, label, fmt in (("loss", "loss", "{:.4f}"), ("learning_rate", "lr", "{:.2e}"),
                            ("tokens_per_s", "tok/s", "{:.0f}")):
        if event.get(key) is not None:
            parts.append(f"{label} {_fixed(event[key], fmt)}")
    if isinstance(event.get("step_time_s"), (int, float)):
        parts.append(f"{event['step_time_s']:.2f} s/step")
    if isinstance(event.get("memory_bytes"), (int, float)):
        parts.append(f"mem {present.size(event['memory_bytes'])}")
    if event.get("eta_s") is not None:
        parts.append(f"eta {present.duration(event['eta_s'])}")  # `1h02m`, not `3725s`
    return "  ".join(parts)


def _fixed(value: Any, fmt: str) -> str:
    """A number from an events file as text; anything else (a hand-edited or torn file) as-is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.format(value)
    return "-" if value is None else str(value)


def _outcome_line(job: Any) -> str:
    if job.state == "finished" and job.result:
        metrics = job.result.get("metrics") or {}
        loss = metrics.get("eval_loss")
        suffix = f", eval loss {_fixed(loss, '{:.4f}')}" if loss is not None else ""
        return f"job {job.id} finished: registered {job.result.get('version')}{suffix}"
    return f"job {job.id} {job.state}: {job.reason or ''}".rstrip(": ")
