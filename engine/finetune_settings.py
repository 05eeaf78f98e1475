"""The one fine-tuning settings schema: its names, defaults and checks.

deck.toml's [finetune] (engine.config), a --config TOML file, the CLI flags and the console's form
all speak these names; a request layers them: defaults < deck.toml [finetune] < the TOML file <
overrides. The older deck.toml names `seq_len` and `lora_r` are accepted as aliases of
`max_length` and `lora_rank` (ALIASES); the rest of the code uses the new ones only.

Steps or epochs: `steps` is a fixed number of optimizer steps, `epochs` passes over the data;
when a layer sets both, steps wins, and a layer's choice replaces the one below it.

Torch-free and below engine.config (pyproject's layers), so a broken [finetune] fails when deck.toml
is read and the whole request is validated before a job starts.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from engine.errors import BadInput

METHODS = ("lora", "full", "freeze")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
              "polynomial", "inverse_sqrt")
DEFAULT_LR = {"lora": 2e-4, "full": 5e-5, "freeze": 1e-4}


@dataclass(frozen=True)
class FinetuneSettings:
    method: str = "lora"
    steps: int | None = None  # a fixed number of optimizer steps, or...
    epochs: float | None = None  # ...passes over the data (1 when neither is given)
    learning_rate: float | None = None  # None: a default per method
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    eval_split: float = 0.1  # share of the data held out when there is no eval file
    eval_file: str | None = None
    eval_every: int | None = None  # steps; None: at each checkpoint
    checkpoint_every: int = 50
    logging_steps: int = 1
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] | None = None  # None: peft's default for the architecture
    trainable_layers: int = 2  # freeze: how many top layers (plus the head) train
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where the GPU has it, else fp32) | fp32 | bf16
    max_grad_norm: float = 1.0

    @property
    def effective_lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.method]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_targets"] = list(self.lora_targets) if self.lora_targets else None
        data["learning_rate"] = self.effective_lr
        return data


SETTING_NAMES = tuple(f.name for f in fields(FinetuneSettings))


# Older names, accepted wherever settings are read (deck.toml [finetune] used them until 0.1)
ALIASES = {"seq_len": "max_length", "lora_r": "lora_rank"}
DEVICE_CHOICES = ("auto", "cpu", "cuda")  # and cuda:N


def canonical(values: dict[str, Any], where: str) -> dict[str, Any]:
    """values with `-` spelled `_` and the old aliases renamed; unknown names and an alias given
    beside its new name are BadInput naming `where`."""
    renamed: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        name = ALIASES.get(name, name)
        if name in renamed:
            raise BadInput(f"{where}: {key} and {name} are the same setting; keep {name}")
        renamed[name] = value
    unknown = sorted(set(renamed) - set(SETTING_NAMES))
    if unknown:
        raise BadInput(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(SETTING_NAMES)})")
    return renamed


def checked_values(values: dict[str, Any], where: str) -> dict[str, Any]:
    """The explicitly set values of one layer (deck.toml [finetune]), canonical and checked as
    they would be in a request, minus this machine's devices (deck.toml is read by every verb)."""
    values = canonical(values, where)
    settings = check_settings(_replaced(FinetuneSettings(), values), check_machine=False)
    return {name: getattr(settings, name) for name in values}


def build_settings(config_file: str | Path | None, overrides: dict[str, Any],
                   deck_defaults: dict[str, Any] | None = None,
                   check_machine: bool = True) -> FinetuneSettings:
    """Defaults < deck.toml [finetune] < the TOML file < overrides (None: not given); validated.

    Each layer's steps or epochs replaces the layers below it; within one layer steps wins.
    """
    values: dict[str, Any] = {}
    layers = [canonical(deck_defaults or {}, "deck.toml [finetune]")]
    if config_file is not None:
        layers.append(_read_toml(Path(config_file).expanduser()))
    layers.append(canonical({k: v for k, v in overrides.items() if v is not None}, "settings"))
    for layer in layers:
        if layer.get("steps") is not None:
            values.pop("epochs", None)
            layer = {k: v for k, v in layer.items() if k != "epochs"}
        elif layer.get("epochs") is not None:
            values.pop("steps", None)
        values.update(layer)
    return check_settings(_replaced(FinetuneSettings(), values), check_machine)


def _replaced(settings: FinetuneSettings, values: dict[str, Any]) -> FinetuneSettings:
    values = dict(values)
    if isinstance(values.get("lora_targets"), (list, tuple)):
        values["lora_targets"] = tuple(values["lora_targets"])
    elif isinstance(values.get("lora_targets"), str):
        values["lora_targets"] = tuple(t.strip() for t in values["lora_targets"].split(",") if t.strip())
    return replace(settings, **values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise BadInput(f"config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"config file {path}: not valid TOML ({error})") from None
    section = document.get("finetune", document)  # a [finetune] table, or top-level keys
    return canonical(section, f"config file {path}")


# Upper bounds: past these a run cannot finish on any machine modeldeck drives, and a typo
# (an extra zero or three) should be refused, not queued.
INT_BOUNDS = {"steps": (1, 10_000_000), "warmup_steps": (0, 10_000_000), "batch_size": (1, 4096),
              "grad_accum": (1, 4096), "max_length": (1, 1 << 20), "checkpoint_every": (1, 10_000_000),
              "logging_steps": (1, 10_000_000), "eval_every": (1, 10_000_000),
              "lora_rank": (1, 4096), "lora_alpha": (1, 1 << 16), "trainable_layers": (1, 10_000),
              "seed": (0, 2**32 - 1)}


def check_settings(s: FinetuneSettings, check_machine: bool = True) -> FinetuneSettings:
    """Every value a run can only fail with, refused in one line; returns the settings with
    numbers parsed (a TOML file may hold "5") and, with check_machine, the device checked
    against this machine."""
    from engine.validate import parse_device, parse_float, parse_int

    _require(s.method in METHODS, f"method must be one of {', '.join(METHODS)}, not {s.method!r}")
    values: dict[str, Any] = {}
    for name, (low, high) in INT_BOUNDS.items():
        if getattr(s, name) is not None:
            values[name] = parse_int(name.replace("_", "-"), getattr(s, name), low, high)
    if s.epochs is not None:
        values["epochs"] = parse_float("epochs", s.epochs, 0, 10_000, exclusive_minimum=True)
    if s.learning_rate is not None:
        values["learning_rate"] = parse_float("learning rate", s.learning_rate, 0,
                                              exclusive_minimum=True)
    values["weight_decay"] = parse_float("weight decay", s.weight_decay, 0)
    values["max_grad_norm"] = parse_float("max grad norm", s.max_grad_norm, 0)
    values["eval_split"] = parse_float("eval split", s.eval_split, 0, 1)
    _require(values["eval_split"] < 1, "eval split must be in [0, 1)")
    values["lora_dropout"] = parse_float("lora dropout", s.lora_dropout, 0, 1)
    _require(values["lora_dropout"] < 1, "lora dropout must be in [0, 1)")
    _require(s.lr_scheduler in SCHEDULERS, f"lr scheduler must be one of {', '.join(SCHEDULERS)}")
    _require(s.precision in ("auto", "fp32", "bf16"), "precision must be auto, fp32 or bf16")
    _require(str(s.device).strip().lower() in ("auto", "cpu", "cuda")
             or str(s.device).strip().lower().startswith("cuda:"),
             f"device must be auto, cpu, cuda or cuda:N, not {str(s.device)[:40]!r}")
    if check_machine:
        values["device"] = parse_device(s.device)  # a CUDA device this machine lacks is refused
    else:
        values["device"] = str(s.device).strip().lower()
    return replace(s, **values)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BadInput(message)


def settings_from_dict(data: dict[str, Any]) -> FinetuneSettings:
    values = {k: v for k, v in data.items() if k in SETTING_NAMES}
    if values.get("lora_targets") is not None:
        values["lora_targets"] = tuple(values["lora_targets"])
    return replace(FinetuneSettings(), **values)
