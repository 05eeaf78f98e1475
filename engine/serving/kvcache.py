"""A KV cache allocated once and written in place: one slot per running sequence.

Each layer holds keys and values of shape (slots, kv_heads, slot_len + 1, head_dim). A sequence
owns one slot for its whole life; its token at position p lives at column p of its slot, so
joining or leaving the batch copies nothing (a leave moves at most one other sequence into the
hole, to keep occupied slots contiguous). The extra last column is scratch: padding queries and
idle rows write there, and no mask ever shows it.

The model calls `update()` once per layer per forward; the scheduler says beforehand, with
`plan()`, which slots the forward's rows are and where each query's key goes. transformers' own
StaticCache keeps one write offset for the whole batch (`cumulative_length`), which cannot hold
sequences of different lengths side by side without left padding, hence this class.
"""

from __future__ import annotations

from typing import Any


def bytes_per_token(config: Any, dtype: Any) -> int:
    """KV bytes one token costs across all layers."""
    import torch

    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    size = torch.tensor([], dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * heads * head_dim * size


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
        self._rows: Any = None       # (n, 1) slot of each row of the next forward
        self._write: Any = None      # (n, q) column each query's key/value goes to
        self._span: slice = slice(0)  # the slots the next forward reads, contiguous
        self._kv_len = 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def plan(self, first_slot: int, rows: int, write: Any, kv_len: int) -> None:
        """The next forward covers slots [first_slot, first_slot + rows); `write` (rows, q)
        gives each query's column; attention reads columns [0, kv_len)."""
        import torch

        self._span = slice(first_slot, first_slot + rows)
        self._rows = torch.arange(first_slot, first_slot + rows, device=write.device)[:, None]
        self._write, self._kv_len = write, kv_len

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[Any, Any]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        # Advanced indices on dims 0 and 2 put the (rows, q) index dims first: (rows, q, heads, dim).
        keys[self._rows, :, self._write] = key_states.transpose(1, 2)
        values[self._rows, :, self._write] = value_states.transpose(1, 2)
        return keys[self._span, :, :self._kv_len], values[self._span, :, :self._kv_len]

    def move(self, source: int, destination: int, length: int) -> None:
        """Copy one slot's first `length` columns into another (compaction after a leave)."""
        for tensor in self.keys + self.values:
            tensor[destination, :, :length] = tensor[source, :, :length]
