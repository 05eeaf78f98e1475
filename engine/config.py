"""deck.toml -> validated settings.

Every section has defaults, so an absent deck.toml is a valid, empty deck. Unknown keys are
errors (a typo must not silently fall back to a default). Errors name the file and the key.
Scalars of the single-table sections can be overridden from the environment as
`MODELDECK_<SECTION>_<KEY>` (e.g. `MODELDECK_SERVE_PORT=9000`).

Every verb validates deck.toml (a broken one is exit 2 whatever the verb) through
Deck.check_config, which imports this module only when a file or an override variable exists:
pydantic and these classes are most of a quick verb's start-up (bench/status.py on an AVX2 EPYC,
2 cores, 2026-11-27: `modeldeck status` median 553 ms when every run imported them, see the bench
for today's figures with and without a deck.toml).
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.alert_settings import AlertRules
from engine.errors import BadInput
from engine.validate import NAME_PATTERN, unique_names
from engine.finetune_settings import checked_values
from engine.host_settings import Hosts
from engine.slo_settings import SloBounds, SloSettings
from engine.paths import CONFIG_ENV_PREFIX, config_path
from engine.ray_settings import RayServeFields


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret_file(path: Path) -> str | None:
    """A secret kept in a file (its first and last whitespace dropped); None when it is empty.
    The one reader for deck.toml's api_key_file and `serve --api-key-file`."""
    try:
        return path.expanduser().read_text().strip() or None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise BadInput(f"cannot read API key file {path}: {reason}") from None


class SecretSource(Section):
    """Where a secret comes from. The value itself is never stored in settings or printed."""

    api_key_env: str | None = None
    api_key_file: Path | None = None

    def resolve_secret(self) -> str | None:
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if value:
                return value
        if self.api_key_file:
            return read_secret_file(self.api_key_file)
        return None

    @property
    def secret_configured(self) -> bool:
        return bool(self.api_key_env or self.api_key_file)


class GateSettings(Section):
    """The health gate a new version must pass before it takes traffic."""

    prompts: tuple[str, ...] = ("Hello", "The capital of France is", "1, 2, 3,")
    max_tokens: int = Field(default=8, ge=1, le=256)
    max_latency_s: float | None = Field(default=None, gt=0)
    # Extra time a restarted service (a command target's health_url) may take to answer after
    # the apply step; the local server needs none: it gates right after its own load returns.
    settle_s: float = Field(default=0.0, ge=0)


class ServeSettings(SecretSource):
    host: str = "127.0.0.1"
    port: int = Field(default=8471, ge=0, le=65535)  # 0: the system picks a free port
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    max_batch_size: int = Field(default=8, ge=1, le=512)
    max_queue: int = Field(default=64, ge=0)
    max_tokens_limit: int = Field(default=2048, ge=1)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # Slow or idle clients (engine/serving/http.py): the longest wait for a request's headers or
    # the next piece of its body, the longest a JSON body may take in all, and the most open
    # connections (those beyond are answered 503 and closed).
    read_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_connections: int = Field(default=256, ge=1, le=65535)
    # `deploy --target local` (CLI or console) starts the server detached when none runs;
    # false: deploy only moves the pointer and a later `modeldeck serve` picks the version up.
    autostart: bool = True
    gate: GateSettings = GateSettings()

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, device: str) -> str:
        """Syntax only (no torch here); engine.validate.parse_device checks the machine has it
        when a server starts."""
        from engine.validate import DEVICE_PATTERN

        if not DEVICE_PATTERN.match(device.strip().lower()):
            raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
        return device.strip().lower()


EndpointKind = Literal["vllm", "tgi", "llamacpp", "openai", "modeldeck", "ollama"]


class EndpointSettings(SecretSource):
    name: str = Field(min_length=1)
    kind: EndpointKind
    url: str = Field(min_length=1)
    verify_tls: bool = True
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    model: str | None = None  # groups replicas of one model for merged percentiles
    slo: SloBounds | None = None  # this endpoint's own [slo] bounds (engine.slo_settings)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")


class PrometheusSettings(SecretSource):
    url: str | None = None
    timeout_s: float = Field(default=3.0, gt=0, le=60)
    verify_tls: bool = True
    history_minutes: int = Field(default=15, ge=1, le=24 * 60)


TargetKind = Literal["modeldeck", "vllm-lora", "command", "ray-serve"]


class TargetSettings(SecretSource, RayServeFields):  # ray-serve's keys: engine.ray_settings
    name: str = Field(min_length=1)
    kind: TargetKind
    url: str | None = None
    health_url: str | None = None
    deploy_command: tuple[str, ...] = ()
    rollback_command: tuple[str, ...] = ()
    lora_dir: Path | None = None
    verify_tls: bool = True
    timeout_s: float = Field(default=30.0, gt=0)
    gate: GateSettings = GateSettings()
    # command targets: how the gate confirms the NEW version serves (engine.targets.command).
    # version_url: GET it, its body must name {model}@{version} (or be/hold the version);
    # version_header: the header of that answer (or of health_url's) that carries the version.
    version_url: str | None = None
    version_header: str | None = None
    version_check: bool = True  # false: accept any healthy answer (an explicit opt-out)

    @field_validator("name")
    @classmethod
    def _not_local(cls, name: str) -> str:
        if name == "local":
            raise ValueError("'local' is built in; configure it under [serve]")
        if not NAME_PATTERN.match(name):  # it names a lock file under run/locks/
            raise ValueError("use letters, digits, '.', '_' or '-' (max 64)")
        return name

    @model_validator(mode="after")
    def _gate_checks_something(self) -> "TargetSettings":
        # A command target with nothing to probe would pass its gate having checked nothing.
        if self.kind == "command" and not (self.url or self.health_url):
            raise ValueError(f"target {self.name!r} (command) needs url or health_url: "
                             "without one its gate would check nothing")
        if self.kind == "command" and not self.gate.prompts and not self.health_url:
            raise ValueError(f"target {self.name!r} (command): gate.prompts is empty and there "
                             "is no health_url, so its gate would check nothing")
        return self


class TelemetrySettings(Section):
    interval_s: float = Field(default=1.0, gt=0, le=3600)
    history_points: int = Field(default=600, ge=10, le=100_000)


class ConsoleSettings(Section):
    theme: str = "modeldeck-dark"
    theme_dir: Path | None = None
    refresh_s: float = Field(default=1.0, gt=0, le=60)
    record: Path | None = None  # the console records to this file too (relative: to the deck home)


class FinetuneDefaults(Section):
    """deck.toml [finetune]: the defaults every fine-tune starts from (the console's form and
    `modeldeck finetune` alike), with the names of the one schema,
    engine.finetune_settings.FinetuneSettings; a setting left out is that schema's default.
    `seq_len` and `lora_r` are accepted as the older names of max_length and lora_rank. Only what
    the file (or a MODELDECK_FINETUNE_* variable) sets is a field here (model_fields_set)."""

    # The schema's names (tests/training/test_settings_schema.py checks they are the same set);
    # the values are checked there, so each is as the schema types it.
    method: Any = None
    steps: Any = None
    epochs: Any = None
    learning_rate: Any = None
    lr_scheduler: Any = None
    warmup_steps: Any = None
    weight_decay: Any = None
    batch_size: Any = None
    grad_accum: Any = None
    max_length: Any = None
    eval_split: Any = None
    eval_file: Any = None
    eval_every: Any = None
    checkpoint_every: Any = None
    logging_steps: Any = None
    lora_rank: Any = None
    lora_alpha: Any = None
    lora_dropout: Any = None
    lora_targets: Any = None
    trainable_layers: Any = None
    seed: Any = None
    device: Any = None
    precision: Any = None
    max_grad_norm: Any = None

    @model_validator(mode="before")
    @classmethod
    def _one_schema(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values  # pydantic says the section must be a table
        try:
            return checked_values(values, "finetune")
        except BadInput as error:
            raise PydanticCustomError("finetune", str(error).removeprefix("finetune: ")) from None


class CompressSettings(Section):
    method: Literal["bf16", "fp16", "int8", "prune", "distill"] = "int8"
    max_ppl_increase: float = Field(default=5.0, ge=0)
    eval_file: Path | None = None


class RolloutSettings(Section):
    """deck.toml [rollout]: how `modeldeck rollout` ramps a candidate (flags override each).

    Gates compare the candidate with the live version over the same window, from the server's
    per-version histograms. Latencies below latency_floor_s count as equal: the histograms'
    first bucket ends at 10 ms, so smaller differences are not measured, only noise."""

    steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)  # traffic fractions, the last one 1.0
    hold_s: float = Field(default=60.0, ge=0, le=7 * 86400)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)
    shadow: float = Field(default=0.0, ge=0, le=1)  # fraction of live requests mirrored first
    ttft_p95_ratio: float = Field(default=1.2, gt=0)
    itl_p95_ratio: float = Field(default=1.2, gt=0)
    error_rate_margin: float = Field(default=0.01, ge=0, le=1)
    latency_floor_s: float = Field(default=0.01, ge=0)
    # SLO-attainment gates (filled from deck.toml [slo] by the rollout verb): the candidate's
    # share of requests within each bound may trail live's by at most slo_attainment_margin.
    slo_ttft_s: float | None = Field(default=None, gt=0)
    slo_itl_s: float | None = Field(default=None, gt=0)
    slo_attainment_margin: float = Field(default=0.02, ge=0, le=1)
    # Eval gate before any traffic: candidate perplexity against live on the same text.
    eval_file: Path | None = None  # default: the held-out text the compression report uses
    promote_ppl_ratio: float = Field(default=1.02, gt=0)
    hold_ppl_ratio: float = Field(default=1.10, gt=0)

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_as_percent(cls, steps: Any) -> Any:
        """deck.toml writes percentages (5, 25, 50, 100), as the --steps flag does; a list
        whose largest value is 1 is read as fractions (what model_dump gives back)."""
        from engine.validate import parse_percent_steps

        if isinstance(steps, (list, tuple)) and all(isinstance(step, (int, float))
                                                    and not isinstance(step, bool)
                                                    for step in steps):
            fractions = bool(steps) and max(steps) <= 1.0
            try:
                return parse_percent_steps("steps", ",".join(
                    f"{step * 100 if fractions else step:g}" for step in steps))
            except BadInput as error:
                raise ValueError(str(error).removeprefix("steps ")) from None
        return steps


class DeckConfig(Section):
    serve: ServeSettings = ServeSettings()
    endpoints: tuple[EndpointSettings, ...] = ()
    prometheus: PrometheusSettings = PrometheusSettings()
    targets: tuple[TargetSettings, ...] = ()
    telemetry: TelemetrySettings = TelemetrySettings()
    console: ConsoleSettings = ConsoleSettings()
    finetune: FinetuneDefaults = FinetuneDefaults()
    compress: CompressSettings = CompressSettings()
    rollout: RolloutSettings = RolloutSettings()
    slo: SloSettings = SloSettings()
    alerts: AlertRules = ()  # [[alerts]] (engine.alert_settings; the defaults ship there)
    hosts: Hosts = ()  # [[hosts]]: the fleet over ssh (engine.host_settings)
    source: Path | None = None  # the file these settings came from, if any

    @field_validator("endpoints", "targets")
    @classmethod
    def _unique_names(cls, entries: tuple) -> tuple:
        return unique_names(entries)

    def target(self, name: str) -> TargetSettings | None:
        return next((target for target in self.targets if target.name == name), None)

    @property
    def target_names(self) -> tuple[str, ...]:
        return ("local", *(target.name for target in self.targets))


def load_config(explicit: str | os.PathLike | None = None) -> DeckConfig:
    """Read and validate deck.toml and the environment's overrides: BadInput (one line naming
    the file or the variable, and the key) on anything wrong."""
    path, named = config_path(explicit)
    try:
        exists = path.exists()
    except (OSError, ValueError) as error:  # a name too long, a NUL byte
        raise BadInput(f"cannot read config file {_shown(path)}: {_reason(error)}") from None
    if not exists:
        if named:
            raise BadInput(f"config file {_shown(path)} does not exist")
        raw: dict = {}
    else:
        raw = _read_toml(path)
        _check_document(path, raw)
    merged, from_env = _env_overrides(raw)
    try:
        return DeckConfig(**merged, source=path if exists else None)
    except ValidationError as error:
        raise BadInput(_describe(path, error, from_env)) from None


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not valid TOML: not UTF-8 text") from None
    except OSError as error:
        raise BadInput(f"cannot read config file {_shown(path)}: {_reason(error)}") from None


def _check_document(path: Path, raw: dict) -> None:
    """What pydantic would not say clearly: `source` is ours (where the settings came from), and
    TOML's inf and nan are no setting's value (`gt=0` lets inf through)."""
    if "source" in raw:
        raise BadInput(f"{path}: source: not a setting (unknown key)")
    for location, value in _leaves(raw):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInput(f"{path}: {location}: must be a finite number, not {value}")


def _leaves(value: object, location: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items()
                for leaf in _leaves(item, f"{location}.{key}" if location else str(key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, f"{location}.{index}")]
    return [(location, value)]


def _env_overrides(raw: dict) -> tuple[dict, dict[str, str]]:
    """Apply MODELDECK_<SECTION>_<KEY> variables to the single-table sections. Returns the merged
    document and, per dotted key, the variable that set it (errors name the variable)."""
    merged = dict(raw)
    from_env: dict[str, str] = {}
    for section_name, field in DeckConfig.model_fields.items():
        section_type = field.annotation
        if not (isinstance(section_type, type) and issubclass(section_type, Section)):
            continue
        current = merged.get(section_name)
        if current is not None and not isinstance(current, dict):
            continue  # `serve = 5`: pydantic says the section must be a table
        section = dict(current or {})
        for key in section_type.model_fields:
            variable = f"{CONFIG_ENV_PREFIX}{section_name}_{key}".upper()
            value = os.environ.get(variable)
            if value is not None:
                section[key] = value
                from_env[f"{section_name}.{key}"] = variable
        if section:
            merged[section_name] = section
    return merged, from_env


def _describe(path: Path, error: ValidationError, from_env: dict[str, str]) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    for key, variable in from_env.items():
        if location == key or location.startswith(key + "."):
            return f"environment variable {variable}: {first['msg']}"
    return f"{path}: {location}: {first['msg']}"


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


def _shown(path: Path, limit: int = 200) -> str:
    text = str(path)
    return text if len(text) <= limit else text[:limit] + "..."
