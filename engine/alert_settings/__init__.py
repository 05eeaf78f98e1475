"""deck.toml [[alerts]]: alert rules, their sinks, and the default rule set that ships.

    [[alerts]]
    name = "gpu-hot"
    when = "gpu.temperature_c > 85"   # engine.alert_settings.expression: the safe `when` language
    for_s = 60                         # the condition holds this long before the alert fires
    suppress_s = 120                   # ...and is clear this long before it resolves (flapping)
    webhook = "https://hooks.example/alerts"
    webhook_secret_env = "ALERT_TOKEN" # sent as Authorization: Bearer; never printed
    command = ["notify-send", "modeldeck"]
    bell = true

The default rules (DEFAULT_RULES) always apply; a rule of yours with a default's name replaces
it, and one with only that name and sinks (no `when`) keeps the default's condition and adds the
sinks; `enabled = false` turns a rule off. Below engine.config in the layers (pyproject), so a
bad `when` is exit 2 when deck.toml is read, naming the rule.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from engine.alert_settings.expression import Expression, ExpressionError, parse
from engine.snapshots import EndpointSnapshot, GpuDevice, HostSnapshot
from engine.validate import NAME_PATTERN, unique_names

# Fields a rule may read, per subject. GPUs, endpoints and the host are the snapshot's
# (engine/snapshots.py) plus a few derived ones; jobs and rollouts are built from their files
# by engine.telemetry.alerts.subjects (a test checks both lists match what it builds).
_SKIPPED = {"processes", "utilization_history", "tokens_history", "versions", "cpu_history",
            "cpu_per_core_pct"}
GPU_DERIVED = ("memory_pct",)
ENDPOINT_DERIVED = ("state",)  # the same as status (`endpoint.state == 'down'`)
JOB_FIELDS = ("id", "kind", "state", "reason", "step", "max_steps", "loss", "loss_average",
              "loss_spike_ratio", "grad_norm", "non_finite", "eval_loss", "eval_loss_best",
              "eval_loss_regression", "seconds_since_step", "tokens_per_s", "age_s")
ROLLOUT_FIELDS = ("id", "status", "candidate", "live", "step", "weight", "message",
                  "failed_gate", "seconds_since_update")


def _names(cls: Any, extra: tuple[str, ...] = ()) -> frozenset[str]:
    return frozenset({field.name for field in fields(cls)} - _SKIPPED | set(extra))


SUBJECT_FIELDS: dict[str, frozenset[str]] = {
    "gpu": _names(GpuDevice, GPU_DERIVED),
    "endpoint": _names(EndpointSnapshot, ENDPOINT_DERIVED),
    "host": _names(HostSnapshot),
    "job": frozenset(JOB_FIELDS),
    "rollout": frozenset(ROLLOUT_FIELDS),
}


def parse_when(text: str) -> Expression:
    return parse(text, SUBJECT_FIELDS)


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    when: str | None = None  # None only for a default's name: keep its condition
    for_s: float | None = Field(default=None, ge=0, le=7 * 86400)
    suppress_s: float | None = Field(default=None, ge=0, le=7 * 86400)
    severity: Literal["info", "warning", "critical"] | None = None
    enabled: bool = True
    webhook: str | None = None
    webhook_secret_env: str | None = None
    webhook_secret_file: Path | None = None
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=120)
    webhook_retries: int = Field(default=3, ge=0, le=10)
    command: tuple[str, ...] = ()
    command_timeout_s: float = Field(default=10.0, gt=0, le=600)
    bell: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise ValueError("use letters, digits, '.', '_' or '-' (max 64)")
        return name

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url

    @field_validator("command")
    @classmethod
    def _argument_list(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        if command and (not command[0].strip() or any("\x00" in part for part in command)):
            raise ValueError("must be an argument list whose first item names a program")
        return command

    @model_validator(mode="after")
    def _condition(self) -> "AlertRule":
        if self.when is None and self.name not in DEFAULTS_BY_NAME:
            raise ValueError(f"rule {self.name!r} needs `when` (only a default rule's name "
                             "may leave it out)")
        if self.when is not None:
            try:
                parse_when(self.when)
            except ExpressionError as error:
                raise PydanticCustomError("alert_when", "rule {name}: when {when} {problem}",
                                          {"name": repr(self.name), "when": repr(self.when),
                                           "problem": str(error)}) from None
        return self

    @property
    def expression(self) -> Expression:
        return parse_when(self.when or "")

    def public(self) -> dict[str, Any]:
        """The rule as `modeldeck alerts rules` shows it: where the secret comes from, not it."""
        shown = self.model_dump(mode="json", exclude={"webhook_secret_env", "webhook_secret_file"})
        if self.webhook:  # a token may hide in its path or query (Slack-style URLs)
            parts = urlsplit(self.webhook)
            shown["webhook"] = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."
        shown["webhook_secret"] = ("env " + self.webhook_secret_env if self.webhook_secret_env
                                   else f"file {self.webhook_secret_file}"
                                   if self.webhook_secret_file else None)
        return shown


def _default(name: str, when: str, for_s: float, severity: str = "warning",
             suppress_s: float = 120.0) -> dict[str, Any]:
    return {"name": name, "when": when, "for_s": for_s, "suppress_s": suppress_s,
            "severity": severity}


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    _default("endpoint-down", "endpoint.state == 'down'", 30, "critical"),
    _default("gpu-hot", "gpu.temperature_c > 85", 60),
    # NVML's XID events since the reader started; a GPU that raised one usually needs a reset,
    # so the alert stays fired until the sampler restarts
    _default("gpu-xid", "gpu.xid_errors > 0", 0, "critical"),
    _default("gpu-memory-full", "gpu.memory_pct > 97", 120),
    _default("host-memory-full", "host.memory_pct > 95", 60),
    _default("kv-cache-full", "endpoint.kv_cache_pct > 95", 60),
    _default("slo-attainment-low", "endpoint.slo.joint < 0.9", 120),
    _default("training-non-finite", "job.non_finite", 0, "critical"),
    _default("loss-spike", "job.loss_spike_ratio > 3", 0),
    _default("training-stalled", "job.state == 'running' and job.seconds_since_step > 600", 0),
    _default("eval-loss-regression", "job.eval_loss_regression > 1.1", 0),
    _default("rollout-gate-tripped",
             "rollout.status == 'failed' and rollout.seconds_since_update < 3600", 0, "critical"),
)
DEFAULTS_BY_NAME = {rule["name"]: rule for rule in DEFAULT_RULES}
DEFAULT_FOR_S, DEFAULT_SUPPRESS_S = 0.0, 60.0


def _unique(rules: tuple[AlertRule, ...]) -> tuple[AlertRule, ...]:
    return unique_names(rules, "rule name")


# DeckConfig's `alerts` field: deck.toml's [[alerts]], names unique.
AlertRules = Annotated[tuple[AlertRule, ...], AfterValidator(_unique)]


def effective_rules(configured: tuple[AlertRule, ...]) -> tuple[AlertRule, ...]:
    """The defaults merged with deck.toml's rules (yours win by name), enabled ones only, every
    optional setting filled in."""
    mine = {rule.name: rule for rule in configured}
    merged: list[AlertRule] = []
    for default in DEFAULT_RULES:
        rule = mine.pop(default["name"], None)
        given = rule.model_dump(exclude_unset=True) if rule is not None else {}
        merged.append(AlertRule(**{**default, **{k: v for k, v in given.items() if v is not None}}))
    merged += mine.values()
    return tuple(_filled(rule) for rule in merged if rule.enabled)


def _filled(rule: AlertRule) -> AlertRule:
    return rule.model_copy(update={
        "for_s": DEFAULT_FOR_S if rule.for_s is None else rule.for_s,
        "suppress_s": DEFAULT_SUPPRESS_S if rule.suppress_s is None else rule.suppress_s,
        "severity": rule.severity or "warning"})
