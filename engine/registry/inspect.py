"""Validate a model source before anything is stored, and describe it.

Runs without torch: safetensors headers and GGUF metadata are read directly, so a corrupt or
truncated file is refused in milliseconds and before a single blob is written.
"""

from __future__ import annotations

import json
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BadInput
from engine.registry.blobs import describe_mode

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
WEIGHT_SUFFIXES = (".safetensors", ".gguf")
# Plain files a Hugging Face directory needs besides weights. Nothing executable is imported:
# no *.py (trust_remote_code stays off), so modeling code never enters the deck.
SIDE_FILES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
MAX_HEADER_BYTES = 100 << 20


@dataclass(frozen=True)
class SourceDescription:
    """What an import will store: the files (relative name -> path) and what they are."""

    files: tuple[tuple[str, Path], ...]
    weight_format: str  # "safetensors" | "gguf" | "pickle"
    kind: str  # "model" | "adapter"
    architecture: str | None
    param_count: int | None
    base_model: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for _, path in self.files)


def describe_source(source: Path, allow_pickle: bool = False) -> SourceDescription:
    if not source.exists():
        raise BadInput(f"{source} does not exist")
    if source.is_file():
        return _describe_file(source, allow_pickle)
    if source.is_dir():
        return _describe_directory(source, allow_pickle)
    raise BadInput(f"{source} is {describe_mode(source.stat().st_mode)}, "
                   "neither a file nor a directory: refusing to import it")


def _describe_file(path: Path, allow_pickle: bool) -> SourceDescription:
    if path.suffix == ".gguf":
        architecture, params = gguf_summary(path)
        return SourceDescription(((path.name, path),), "gguf", "model", architecture, params)
    if path.suffix in PICKLE_SUFFIXES:
        _refuse_pickle(path, allow_pickle)
    raise BadInput(f"{path}: a single file must be a .gguf; import a model directory for safetensors")


def _regular_entries(directory: Path) -> list[Path]:
    """The directory's files, each a regular file inside it; sub-directories are not imported.

    Judged with lstat, before anything is opened: a FIFO, socket or device file is refused (a
    FIFO would block the import forever), and so is a symbolic link that leads out of the
    directory (`config.json -> ~/.ssh/id_rsa` would otherwise be stored, and maybe pushed).
    Links that stay inside are read through, under the link's own name; so are the links of a
    Hugging Face cache snapshot (`models--X/snapshots/REV/config.json -> ../../blobs/HASH`), which
    stay inside that model's own cache folder.
    """
    root = directory.resolve()
    allowed_roots = (root, *_hf_cache_repo(root))
    entries = []
    for entry in directory.iterdir():
        mode = entry.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if stat.S_ISLNK(mode):
            target = entry.resolve()
            if not any(allowed in target.parents for allowed in allowed_roots):
                raise BadInput(f"{entry} is a symbolic link to {target}, outside {directory}: "
                               "refusing to import it (copy the file in, e.g. `cp -L`)")
            if target.is_dir():
                continue
            mode = target.stat().st_mode
        if not stat.S_ISREG(mode):
            raise BadInput(f"{entry} is {describe_mode(mode)}, not a regular file: "
                           "refusing to import it (remove it from the directory)")
        entries.append(entry)
    return sorted(entries)


def _hf_cache_repo(snapshot: Path) -> tuple[Path, ...]:
    """The cache folder of one model when `snapshot` is `.../models--ORG--NAME/snapshots/REV`."""
    repo = snapshot.parent.parent
    if snapshot.parent.name == "snapshots" and repo.name.startswith("models--") \
            and (repo / "blobs").is_dir():
        return (repo / "blobs",)
    return ()


def _describe_directory(directory: Path, allow_pickle: bool) -> SourceDescription:
    entries = _regular_entries(directory)
    weights = [p for p in entries if p.suffix == ".safetensors"]
    pickles = [p for p in entries if p.suffix in PICKLE_SUFFIXES]
    if not weights and pickles:
        _refuse_pickle(pickles[0], allow_pickle)
    if not weights and not pickles:
        ggufs = [p for p in entries if p.suffix == ".gguf"]
        if len(ggufs) == 1:
            return _describe_file(ggufs[0], allow_pickle)
        raise BadInput(f"{directory} holds no model weights (expected *.safetensors or one .gguf)")
    config = _read_json(directory / "config.json")
    adapter_config = _read_json(directory / "adapter_config.json")
    if config is None and adapter_config is None:
        raise BadInput(f"{directory} has weights but no config.json (or adapter_config.json)")
    params = sum(safetensors_param_count(path) for path in weights) if weights else None
    chosen = weights or pickles
    side = [p for p in entries if p.suffix in SIDE_FILES]
    files = tuple((p.name, p) for p in sorted(chosen + side))
    if adapter_config is not None and config is None:
        return SourceDescription(files, "safetensors", "adapter", adapter_config.get("peft_type"),
                                 params, adapter_config.get("base_model_name_or_path"))
    return SourceDescription(files, "safetensors" if weights else "pickle", "model",
                             _architecture(config), params)


def _refuse_pickle(path: Path, allow_pickle: bool) -> None:
    if not allow_pickle:
        raise BadInput(f"{path} is a pickle checkpoint, which can run code when loaded; "
                       "convert it to safetensors or pass --allow-pickle")


def _architecture(config: dict | None) -> str | None:
    if config is None:
        return None
    architectures = config.get("architectures") or []
    return architectures[0] if architectures else config.get("model_type")


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"{path}: not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return value


def safetensors_param_count(path: Path) -> int:
    """Validate a safetensors file's header against its size; return its element count."""
    header, data_size = safetensors_header(path)
    return _check_tensors(path, header, data_size)


def safetensors_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's JSON header (tensor name -> dtype, shape, offsets) and the size of
    the data after it; read without torch, refused when it does not fit the file."""
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise BadInput(f"{path}: truncated safetensors file (no header)")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > min(MAX_HEADER_BYTES, file_size - 8):
            raise BadInput(f"{path}: corrupt or truncated safetensors header")
        try:
            header = json.loads(handle.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadInput(f"{path}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise BadInput(f"{path}: corrupt safetensors header")
    return header, file_size - 8 - header_size


def _check_tensors(path: Path, header: dict, data_size: int) -> int:
    elements = 0
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            start, end = (int(offset) for offset in info["data_offsets"])
            width = SAFETENSORS_DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{path}: corrupt safetensors header entry {name!r}") from None
        if end - start != count * width:
            raise BadInput(f"{path}: tensor {name!r} has inconsistent offsets")
        elements += count
        data_end = max(data_end, end)
    if data_end != data_size:
        raise BadInput(f"{path}: truncated or corrupt safetensors file "
                       f"(header promises {data_end} data bytes, file has {data_size})")
    return elements


def gguf_summary(path: Path) -> tuple[str | None, int]:
    """Architecture and parameter count of a GGUF file; BadInput if it is not one."""
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise BadInput(f"{path}: not a GGUF file (bad magic)")
    from gguf import GGUFReader  # numpy-based; imported here to keep `import engine` light

    try:
        reader = GGUFReader(path)
        architecture_field = reader.fields.get("general.architecture")
        architecture = (architecture_field.contents() if architecture_field is not None else None)
        params = sum(int(tensor.n_elements) for tensor in reader.tensors)
    except Exception as error:  # the reader raises many types on damaged files
        raise BadInput(f"{path}: corrupt or truncated GGUF file ({type(error).__name__})") from None
    return architecture, params
