"""What a compression run is asked to do, validated without torch (bad input -> exit 2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import BadInput

METHODS = ("bf16", "fp16", "int8", "prune", "distill")
STRUCTURED_KINDS = ("mlp", "heads")
DEFAULT_TRAIN_TEXT = Path(__file__).resolve().parent.parent / "data" / "corpus.txt"
LLAMA_LIKE = ("llama", "mistral", "qwen2", "smollm")


@dataclass(frozen=True)
class CompressSpec:
    reference: str
    method: str
    sparsity: float | None = None
    structured: str | None = None  # None (unstructured) | "mlp" | "heads"
    recover_steps: int = 0
    student_layers: int | None = None
    steps: int = 50
    temperature: float = 2.0
    alpha: float = 0.5
    learning_rate: float = 5e-5
    data: str | None = None
    keep: tuple[str, ...] = ()
    eval_file: str | None = None
    max_ppl_increase: float = 5.0
    decode_tokens: int = 32
    batch_size: int = 1
    seq_len: int = 128
    train_batch: int = 4
    device: str = "auto"  # where it is compressed and measured: the deck's [serve] device by default
    options: tuple[str, ...] = field(default=(), compare=False)  # flags the user actually gave

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["keep"], data["options"] = list(self.keep), list(self.options)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompressSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["keep"] = tuple(known.get("keep") or ())
        known["options"] = tuple(known.get("options") or ())
        return cls(**known)

    def settings(self) -> dict[str, Any]:
        """The method's settings for the version's lineage (only what applies to the method)."""
        relevant = {"bf16": (), "fp16": (), "int8": ("keep",),
                    "prune": ("sparsity", "structured", "recover_steps", "data"),
                    "distill": ("student_layers", "steps", "temperature", "alpha",
                                "learning_rate", "data")}[self.method]
        values = self.to_dict()
        return {name: values[name] for name in relevant}

    @property
    def train_text_path(self) -> Path:
        return Path(self.data) if self.data else DEFAULT_TRAIN_TEXT


# option -> the methods it applies to; anything else given with a method is an error
METHOD_OPTIONS = {
    "sparsity": ("prune",), "structured": ("prune",), "recover_steps": ("prune",),
    "student_layers": ("distill",), "steps": ("distill",), "temperature": ("distill",),
    "alpha": ("distill",), "learning_rate": ("prune", "distill"), "data": ("prune", "distill"),
    "keep": ("int8",),
}


def validate(spec: CompressSpec, kind: str, architecture: str | None) -> CompressSpec:
    """Every problem as one clear line, before a job or a file exists. Returns the spec with
    method defaults filled in."""
    if spec.method not in METHODS:
        raise BadInput(f"unknown compression method {spec.method!r} (known: {', '.join(METHODS)})")
    for option in spec.options:
        allowed = METHOD_OPTIONS.get(option)
        if allowed is not None and spec.method not in allowed:
            raise BadInput(f"--{option.replace('_', '-')} does not apply to --method {spec.method}")
    if kind != "model":
        raise BadInput(f"{spec.reference} is a {kind}, not a model: only whole models can be compressed")
    _validate_numbers(spec)
    _validate_files(spec)
    needs_layers = spec.method == "distill" or spec.structured is not None
    if needs_layers and not any(name in (architecture or "").lower() for name in LLAMA_LIKE):
        raise BadInput(f"--method {spec.method}{' --structured' if spec.structured else ''} needs a "
                       f"Llama-style decoder; {spec.reference} is {architecture or 'unknown'}")
    if spec.method == "prune" and spec.sparsity is None:
        spec = replace(spec, sparsity=0.3)
    # the worker runs in the job's directory: relative paths must not change meaning
    return replace(spec, eval_file=_absolute(spec.eval_file), data=_absolute(spec.data))


def _absolute(value: str | None) -> str | None:
    return str(Path(value).expanduser().resolve()) if value else None


def parent_layer_count(config_path: Path | None) -> int | None:
    """The parent's decoder layer count from its config.json (None for a GGUF)."""
    import json

    if config_path is None:
        return None
    try:
        return int(json.loads(config_path.read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def spec_for(reference: str, kind: str, architecture: str | None, method: str,
             options: dict[str, Any], layer_count: int | None = None) -> CompressSpec:
    """A validated spec from the options the user gave (names as in CompressSpec)."""
    unknown = sorted(set(options) - set(CompressSpec.__dataclass_fields__)
                     - {"reference", "method", "options"})
    if unknown:
        raise BadInput(f"unknown compression option(s): {', '.join(unknown)}")
    given = {name: value for name, value in options.items() if value is not None}
    if "keep" in given:
        given["keep"] = tuple(given["keep"])
    spec = CompressSpec(reference=reference, method=method, options=tuple(sorted(given)), **given)
    if (method == "distill" and layer_count is not None and spec.student_layers is not None
            and not 1 <= spec.student_layers < layer_count):
        raise BadInput(f"--student-layers must be between 1 and {layer_count - 1} "
                       f"({reference} has {layer_count} layers)")
    return validate(spec, kind, architecture)


def _validate_numbers(spec: CompressSpec) -> None:
    from engine.validate import parse_float, parse_int

    # inf and nan pass every comparison below that they should fail: refuse them first
    for name in ("sparsity", "temperature", "alpha", "learning_rate", "max_ppl_increase"):
        if getattr(spec, name) is not None:
            parse_float(f"--{name.replace('_', '-')}", getattr(spec, name))
    for name, high in (("steps", 10_000_000), ("recover_steps", 10_000_000),
                       ("decode_tokens", 4096), ("batch_size", 4096), ("seq_len", 1 << 20),
                       ("train_batch", 4096)):
        parse_int(f"--{name.replace('_', '-')}", getattr(spec, name), None, high)
    checks = [
        (spec.sparsity is None or 0.0 < spec.sparsity < 1.0, "--sparsity must be between 0 and 1"),
        (spec.structured in (None, *STRUCTURED_KINDS), "--structured must be 'mlp' or 'heads'"),
        (spec.recover_steps >= 0, "--recover-steps must be 0 or more"),
        (spec.student_layers is None or spec.student_layers >= 1, "--student-layers must be 1 or more"),
        (spec.steps >= 1, "--steps must be 1 or more"),
        (spec.temperature > 0, "--temperature must be positive"),
        (0.0 <= spec.alpha <= 1.0, "--alpha must be between 0 and 1"),
        (spec.learning_rate > 0, "--learning-rate must be positive"),
        (spec.max_ppl_increase >= 0, "--max-ppl-increase must be 0 or more"),
        (spec.decode_tokens >= 2, "--decode-tokens must be 2 or more"),
        (spec.batch_size >= 1, "--batch-size must be 1 or more"),
    ]
    for passed, message in checks:
        if not passed:
            raise BadInput(message)


def _validate_files(spec: CompressSpec) -> None:
    for label, value in (("--eval", spec.eval_file), ("--data", spec.data)):
        if value is None:
            continue
        path = Path(value)
        if not path.is_file():
            raise BadInput(f"{label} {value}: no such file")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            raise BadInput(f"{label} {value}: not a readable UTF-8 text file") from None
        if len(text.split()) < 20:
            raise BadInput(f"{label} {value}: too little text to measure or train on")
