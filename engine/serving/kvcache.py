"""A KV cache allocated once and written in place: one slot per running sequence.

Each layer holds keys and values of shape (slots, kv_heads, slot_len + 1, head_dim). A sequence
owns one slot for its whole life; its token at position p lives at column p of its slot, so
joining or leaving the batch copies nothing (a leave moves at most one other sequence into the
hole, to keep occupied slots contiguous). The extra last column is scratch: padding queries and
idle rows write there, and no mask ever shows it.

The fused step (modelstep.py) calls `write_read()` per layer for each part of a forward (a
prefill chunk and the decode rows can share one forward); transformers' eager forward calls
`update()`, after the scheduler named the part with `plan()`. transformers' own
StaticCache keeps one write offset for the whole batch (`cumulative_length`), which cannot hold
sequences of different lengths side by side without left padding, hence this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def bytes_per_token(config: Any, dtype: Any) -> int:
    """KV bytes one token costs across all layers."""
    import torch

    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    size = torch.tensor([], dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * heads * head_dim * size


@dataclass(frozen=True)
class ForwardPart:
    """A block of rows in one forward: slots [first, first + rows), each row `q` queries.

    ids, positions and write are (rows, q): token ids, their positions, and the cache column
    each query's key/value goes to (padding writes to the scratch column). mask (rows, 1, q,
    kv_len) is additive: 0 where a query may look, the dtype's minimum elsewhere."""

    first: int
    ids: Any
    positions: Any
    write: Any
    kv_len: int
    mask: Any
    slots: Any  # (rows, 1) slot index of each row, for the cache writes

    @property
    def span(self) -> slice:
        return slice(self.first, self.first + self.ids.shape[0])


class SlotKVCache:
    """Duck-typed for transformers' attention layers: they only call `update()`."""

    def __init__(self, config: Any, slots: int, slot_len: int, dtype: Any, device: Any) -> None:
        import torch

        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (slots, heads, slot_len + 1, head_dim)
        self.slots, self.slot_len, self.scratch = slots, slot_len, slot_len
        self.keys = [torch.zeros(shape, dtype=dtype, device=device)
                     for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device)
                       for _ in range(config.num_hidden_layers)]
        self._part: ForwardPart | None = None  # what the next transformers forward covers

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def plan(self, part: "ForwardPart") -> None:
        """The next transformers forward covers `part` (the eager step's one part at a time)."""
        self._part = part

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[Any, Any]:
        """transformers' entry point: write and read for the part `plan()` named."""
        assert self._part is not None, "plan() comes before a forward"
        return self.write_read(layer_idx, self._part, key_states, value_states)

    def write_read(self, layer: int, part: "ForwardPart", key_states: Any,
                   value_states: Any) -> tuple[Any, Any]:
        """Write a part's (rows, heads, q, dim) keys/values at its columns; return its slots'
        columns [0, kv_len). One forward may call this for several parts (a prefill chunk and
        the decode rows of the same step)."""
        keys, values = self.keys[layer], self.values[layer]
        # Advanced indices on dims 0 and 2 put the (rows, q) index dims first: (rows, q, heads, dim).
        keys[part.slots, :, part.write] = key_states.transpose(1, 2)
        values[part.slots, :, part.write] = value_states.transpose(1, 2)
        return self.read(layer, part)

    def read(self, layer: int, part: "ForwardPart") -> tuple[Any, Any]:
        """A part's slots' columns [0, kv_len) of one layer: (rows, heads, kv_len, dim) views."""
        return (self.keys[layer][part.span, :, :part.kv_len],
                self.values[layer][part.span, :, :part.kv_len])

    def move(self, source: int, destination: int, length: int) -> None:
        """Copy one slot's first `length` columns into another (compaction after a leave)."""
        for tensor in self.keys + self.values:
            tensor[destination, :, :length] = tensor[source, :, :length]
